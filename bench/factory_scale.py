"""Factory cycle at scale: N tracked VMs across 100 entries, journal + counting cloud double.

Target (DESIGN.md §6): 50,000 tracked VMs, one cycle <= 5 s, cloud calls per cycle O(pages)
not O(VMs), peak RSS <= 500 MB. A cycle here is what the daemon does once requests are
verified: reconcile (settle + one paginated listing per cloud + diff + journal writes),
decide, apply transitions, terminate. Request verification and ad I/O are per request,
not per VM, and are left out. Each cycle ages the cloud by one tick (pending VMs run,
terminated ones drop out) and the frontends ask for a few more idle VMs per entry.

Baselines, same run: the same cycle at N/10 VMs (the growth ratio), and the call count
of the naive design (one describe per tracked VM).

Run: .venv/bin/python bench/factory_scale.py [--vms 50000] [--entries 100] [--cycles 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gwms.factory.decisions import ClientRequest, EntryPolicy, Policy, decide
from gwms.factory.journal import (
    GlideinState,
    GlideinUpdate,
    Journal,
    NewGlidein,
)
from gwms.factory.providers.base import Instance, InstanceState
from gwms.factory.reconcile import reconcile
from gwms.protocol.request import RemoveExcess
from tests.fakes.counting_provider import CountingProvider, FakeCloud

FACTORY = "gfactory-bench"
BATCH = 50  # VMs per batch
NOW = int(time.time())


def populate(journal: Journal, cloud: FakeCloud, vms: int, entries: int) -> None:
    """Journal and cloud agree on `vms` VMs, in batches of BATCH, spread over the entries."""
    launched = datetime.fromtimestamp(NOW - 600, UTC)
    index = 0
    while index < vms:
        entry = f"entry{(index // BATCH) % entries:03d}"
        client = f"fe{(index // BATCH) % 5}.main"
        count = min(BATCH, vms - index)
        batch = journal.new_batch(
            batch_id=journal.next_batch_id(NOW - 600), entry=entry, client=client,
            frontend=client.partition(".")[0], cloud="bench", provider_key="bench",
            count=count, now=NOW - 600,
        )  # fmt: skip
        rows = []
        for i in range(count):
            state = InstanceState.RUNNING if i % 4 else InstanceState.PENDING
            inst = Instance(
                cloud_id=cloud.new_id(), batch_id=batch.batch_id, launch_index=i, state=state,
                entry=entry, client=client, launched_at=launched,
            )  # fmt: skip
            cloud.add(inst, FACTORY)
            gstate = (
                GlideinState.RUNNING if state is InstanceState.RUNNING else GlideinState.LAUNCHING
            )
            rows.append(NewGlidein(batch.batch_id, i, inst.cloud_id, gstate, NOW - 600))
        journal.record_launch(batch.batch_id, rows, NOW - 600)
        index += count


def one_cycle(journal: Journal, provider: CountingProvider, entries: int, now: int) -> dict:
    calls_before = dict(provider.fake.calls)
    t0 = time.perf_counter()
    report = reconcile(journal, {"bench": provider}, factory=FACTORY, now=now)
    t1 = time.perf_counter()
    requests = [
        ClientRequest(
            f"entry{e:03d}",
            f"fe{e % 5}.main",
            f"fe{e % 5}",
            idle=20,
            max_running=10**6,
            remove_excess=RemoveExcess.IDLE,
            issued_at=now,
        )
        for e in range(entries)
    ]
    policies = {
        f"entry{e:03d}": EntryPolicy(
            f"entry{e:03d}",
            max_running=10**6,
            max_idle=10**6,
            max_lifetime=86400,
            retire_after=72000,
        )
        for e in range(entries)
    }
    decision = decide(requests, journal.glideins(), pending=[], entries=policies,
                      frontend_max={f"fe{i}": 10**6 for i in range(5)}, now=now,
                      policy=Policy())  # fmt: skip
    t2 = time.perf_counter()
    journal.update([GlideinUpdate(t.glidein_id, state=t.state) for t in decision.transitions], now)
    if decision.terminations:
        result = provider.terminate([t.cloud_id for t in decision.terminations])
        journal.update(
            [GlideinUpdate(t.glidein_id, state=GlideinState.TERMINATING)
             for t in decision.terminations if t.cloud_id in set(result.accepted)],
            now,
        )  # fmt: skip
    t3 = time.perf_counter()
    calls = {k: v - calls_before.get(k, 0) for k, v in provider.fake.calls.items()}
    return {
        "reconcile": t1 - t0,
        "decide": t2 - t1,
        "act": t3 - t2,
        "total": t3 - t0,
        "calls": calls.get("list", 0) + calls.get("find_batch", 0) + calls.get("terminate", 0),
        "pages": calls.get("list_pages", 0),
        "transitions": report.transitions + len(decision.transitions),
        "launch_plans": sum(p.count for p in decision.launches),
    }


def run(vms: int, entries: int, cycles: int, page: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite")
        cloud = FakeCloud("bench", page_size=page)
        t0 = time.perf_counter()
        populate(journal, cloud, vms, entries)
        setup = time.perf_counter() - t0
        provider = CountingProvider(fake=cloud, factory=FACTORY)
        rows = []
        for c in range(cycles):
            cloud.advance()
            row = one_cycle(journal, provider, entries, NOW + 60 * (c + 1))
            row.update(vms=vms, cycle=c + 1, setup=setup)
            rows.append(row)
        journal.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=50_000)
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--page", type=int, default=1000)
    args = parser.parse_args()
    results = run(args.vms // 10, args.entries, args.cycles, args.page)
    results += run(args.vms, args.entries, args.cycles, args.page)
    header = (f"{'VMs':>7} {'cyc':>3} {'setup s':>7} {'reconcile s':>11} {'decide s':>8}"
              f" {'act s':>6} {'cycle s':>7} {'cloud calls':>11} {'list pages':>10}"
              f" {'naive calls':>11} {'transitions':>11}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['vms']:>7} {r['cycle']:>3} {r['setup']:>7.1f} {r['reconcile']:>11.3f}"
              f" {r['decide']:>8.3f} {r['act']:>6.3f} {r['total']:>7.3f} {r['calls']:>11}"
              f" {r['pages']:>10} {r['vms']:>11} {r['transitions']:>11}")  # fmt: skip
    small = [r["total"] for r in results if r["vms"] == args.vms // 10]
    big = [r["total"] for r in results if r["vms"] == args.vms]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nworst cycle at {args.vms}: {max(big):.3f} s (target 5 s); at {args.vms // 10}:"
          f" {max(small):.3f} s; ratio {max(big) / max(small):.1f}x for 10x VMs")  # fmt: skip
    print(f"peak RSS: {rss:.0f} MiB (target 500 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
