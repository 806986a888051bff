"""Benchmark of the frontend cycle: cluster + match + request policy over synthetic pools.

Jobs are built cheaply from ~50 templates (one Requirements text each) with per-job
variation (owner, VO, site whitelist, memory, state), as the tuples a schedd query
with a projection returns; generation is timed apart from the cycle. The same-run
baseline is naive matching: every job x entry evaluated with classad2 on full job ads,
timed on a sample and extrapolated.

    .venv/bin/python bench/frontend_match.py            # 10k/100k/500k x 20/100/200
    .venv/bin/python bench/frontend_match.py --quick    # a tiny run
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import classad2

from gwms.frontend.clustering import (
    JobRows,
    build_ad,
    cluster_jobs,
    job_projection,
)
from gwms.frontend.matching import is_true, match_clusters, match_refs
from gwms.frontend.policy import (
    Demand,
    Glideins,
    RequestPolicy,
    ScopeLimit,
    compute_group_requests,
    group_scope,
)

NOW = 1_800_000_000
SITES = [f"Site_{i:02d}" for i in range(60)]
VOS = ["cms", "atlas", "dune", "icecube", "osg"]
OWNERS = [f"user{i:02d}" for i in range(16)]
MATCH_EXPR = (
    "(MY.x509UserProxyVOName =?= undefined)"
    " || stringListMember(MY.x509UserProxyVOName, TARGET.GLIDEIN_Supported_VOs)"
)
REQ_EXTRAS = [
    "",
    ' && TARGET.Arch == "X86_64"',
    " && TARGET.HAS_SINGULARITY =?= true",
    " && TARGET.OpSysMajorVer >= {os}",
    " && TARGET.Disk >= MY.RequestDisk",
    " && TARGET.GLIDEIN_MaxWall >= MY.MaxWallTimeMins * 60",
    ' && (TARGET.GLIDEIN_Country =!= "XX")',
]
START_EXPRS = [
    "TARGET.RequestMemory <= MY.Memory",
    'TARGET.Owner =!= "user13"',
    "TARGET.MaxWallTimeMins <= 2880",
]


@dataclass(frozen=True)
class Template:
    """One submit file's worth of jobs: fixed Requirements, a few per-job choices."""

    requirements: str
    cpus: int
    memory: tuple[int, int]
    sites: tuple[str, str, str]
    vo: str | None
    disk: int
    wall: int


def make_templates(rng: random.Random, count: int = 50) -> list[Template]:
    templates = []
    for i in range(count):
        extras = rng.sample(REQ_EXTRAS, 2)
        req = (
            "TARGET.Memory >= MY.RequestMemory && TARGET.Cpus >= MY.RequestCpus"
            " && stringListMember(TARGET.GLIDEIN_Site, MY.DESIRED_Sites)"
            + "".join(e.format(os=7 + i % 3) for e in extras)
            + f" && (TARGET.GLIDEIN_ToDie =?= undefined || TARGET.GLIDEIN_ToDie > {600 * (i + 1)})"
        )
        cpus = rng.choice([1, 1, 1, 4, 8])
        base = 2000 * cpus
        whitelists = tuple(",".join(rng.sample(SITES, rng.randint(3, 20))) for _ in range(3))
        templates.append(
            Template(
                requirements=req,
                cpus=cpus,
                memory=(base, base * 2),
                sites=whitelists,  # type: ignore[arg-type]
                vo=rng.choice([*VOS, None]),
                disk=rng.choice([5_000_000, 20_000_000]),
                wall=rng.choice([600, 1440, 2880]),
            )
        )
    return templates


def make_jobs(templates: list[Template], n: int, entries: list[str], rng: random.Random) -> JobRows:
    """Projected job rows: JobStatus first, then what job_projection() asks for."""
    columns = (
        "JobStatus",
        "Requirements",
        "RequestCpus",
        "MATCH_EXP_JOB_GLIDEIN_Entry_Name",
        "EnteredCurrentStatus",
        "DESIRED_Sites",
        "MaxWallTimeMins",
        "Owner",
        "RequestDisk",
        "RequestMemory",
        "x509UserProxyVOName",
    )
    # Every (template, memory, whitelist, owner subset) combination, built once.
    variants = []
    for t in templates:
        owners = rng.sample(OWNERS, 2)
        for mem in t.memory:
            for sites in t.sites:
                for owner in owners:
                    variants.append(
                        (t.requirements, t.cpus, sites, t.wall, owner, t.disk, mem, t.vo)
                    )
    pick = rng.choices(range(len(variants)), k=n)
    states = rng.choices([1, 2, 5], weights=[85, 12, 3], k=n)
    ages = rng.choices([NOW - 60, NOW - 1200, NOW - 7200], k=n)
    on = rng.choices(entries, k=n)
    rows = []
    for v, st, age, where in zip(pick, states, ages, on, strict=True):
        req, cpus, sites, wall, owner, disk, mem, vo = variants[v]
        rows.append(
            (st, req, cpus, where if st == 2 else None, age, sites, wall, owner, disk, mem, vo)
        )
    return JobRows(columns, rows)


def make_entries(n: int, rng: random.Random) -> dict[str, classad2.ClassAd]:
    entries = {}
    for i in range(n):
        cpus = rng.choice([1, 4, 8])
        attrs = {
            "GLIDEIN_Site": SITES[i % len(SITES)],
            "GLIDEIN_Supported_VOs": ",".join(rng.sample(VOS, rng.randint(1, 4))),
            "GLIDEIN_CPUS": cpus,
            "Cpus": cpus,
            "Memory": 2500 * cpus,
            "Disk": rng.choice([10_000_000, 50_000_000]),
            "Arch": "X86_64",
            "OpSysMajorVer": rng.choice([7, 8, 9]),
            "HAS_SINGULARITY": rng.random() < 0.7,
            "GLIDEIN_MaxWall": rng.choice([86400, 172800]),
            "GLIDEIN_Country": rng.choice(["US", "IT", "XX"]),
        }
        ad = classad2.ClassAd(attrs)
        if i % 4 == 0:
            ad["GLIDEIN_Start"] = classad2.ExprTree(START_EXPRS[(i // 4) % len(START_EXPRS)])
        entries[f"entry_{i:03d}@factory"] = ad
    return entries


def run_cycle(jobs: JobRows, entries: dict[str, classad2.ClassAd]) -> tuple[int, int]:
    """One frontend cycle for one group: cluster, match, policy. Returns (clusters, evals)."""
    refs = match_refs(MATCH_EXPR, entries)
    clusters = cluster_jobs(jobs, refs, now=NOW)
    result = match_clusters(clusters, entries, MATCH_EXPR)
    glideins = {name: Glideins(total=20, idle=3, running=17) for name in entries}
    demands = [
        Demand(
            name,
            m.effective_idle_glideins,
            old_idle=m.effective_old_idle_glideins,
            matching_idle_jobs=m.matching_idle,
            running_here=m.running_here,
        )
        for name, m in result.entries.items()
    ]
    group = group_scope(
        "main", glideins, max_running=100_000, curb_running=90_000, max_idle=1000, curb_idle=200
    )
    frontend = ScopeLimit("frontend", group.glideins, group.idle, max_running=200_000)
    requests = compute_group_requests(demands, glideins, RequestPolicy(), group, (frontend,))
    assert len(requests) == len(entries)
    return len(clusters.clusters), result.evaluations


def naive_per_pair(
    jobs: JobRows, entries: dict[str, classad2.ClassAd], sample: int, rng: random.Random
) -> float:
    """Seconds per job x entry pair for naive matching on full classad2 job ads."""
    match = classad2.ExprTree(MATCH_EXPR)
    rows = rng.sample(list(jobs.rows), min(sample, len(jobs.rows)))
    ads = [build_ad(dict(zip(jobs.columns, r, strict=True))) for r in rows]
    entry_ads = list(entries.values())
    starts = [e.lookup("GLIDEIN_Start") if "GLIDEIN_Start" in e else None for e in entry_ads]
    pairs = 0
    t0 = time.perf_counter()
    for ad in ads:
        req = ad.lookup("Requirements")
        for entry, start in zip(entry_ads, starts, strict=True):
            _ = (
                is_true(match.eval(scope=ad, target=entry))
                and is_true(req.eval(scope=ad, target=entry))
                and (start is None or is_true(start.eval(scope=entry, target=ad)))
            )
            pairs += 1
    return (time.perf_counter() - t0) / pairs


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (2k jobs x 10 entries)")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--sample", type=int, default=200, help="jobs in the naive sample")
    args = parser.parse_args(argv)
    sizes = (
        [(2_000, [10])]
        if args.quick
        else [(10_000, [20, 100, 200]), (100_000, [20, 100, 200]), (500_000, [20, 100, 200])]
    )
    rng = random.Random(args.seed)
    templates = make_templates(rng)
    all_entries = make_entries(max(n for _, ns in sizes for n in ns), rng)
    print(f"projection: {', '.join(job_projection(match_refs(MATCH_EXPR, all_entries)))}")
    header = (
        f"{'jobs':>8} {'entries':>7} {'clusters':>8} {'evals':>7} {'gen s':>6} {'cycle s':>8}"
        f" {'naive us/pair':>13} {'naive s (extrapolated)':>22} {'ratio':>8} {'peak RSS MiB':>12}"
    )
    print(header)
    print("-" * len(header))
    for n_jobs, entry_counts in sizes:
        t0 = time.perf_counter()
        jobs = make_jobs(templates, n_jobs, list(all_entries)[: max(entry_counts)], rng)
        gen = time.perf_counter() - t0
        for n_entries in entry_counts:
            entries = dict(list(all_entries.items())[:n_entries])
            t0 = time.perf_counter()
            n_clusters, evals = run_cycle(jobs, entries)
            cycle = time.perf_counter() - t0
            per_pair = naive_per_pair(jobs, entries, args.sample, rng)
            naive = per_pair * n_jobs * n_entries
            print(
                f"{n_jobs:>8} {n_entries:>7} {n_clusters:>8} {evals:>7} {gen:>6.2f} {cycle:>8.3f}"
                f" {per_pair * 1e6:>13.1f} {naive:>22.1f} {naive / cycle:>7.0f}x"
                f" {peak_rss_mib():>12.0f}"
            )
        del jobs
    return 0


if __name__ == "__main__":
    sys.exit(main())
