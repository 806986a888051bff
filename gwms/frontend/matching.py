"""Match job clusters against factory entries and count the jobs each entry could serve.

Three ClassAd expressions decide whether a cluster matches an entry (all must be true;
UNDEFINED and ERROR are no match):

* the group's match expression, evaluated with MY = the job, TARGET = the entry ad
  (the role of glideinWMS's ``match_expr``, which sees ``job`` and ``glidein``);
* the job's Requirements, with MY = the job and TARGET = the entry ad, which stands in
  for the machine ad of a future glidein (``TARGET.GLIDEIN_Site``, ``TARGET.Memory``);
* the entry's start expression (entry attribute ``GLIDEIN_Start``) and the group's
  start expression, with MY = the entry ad, TARGET = the job, like a startd's START.

Each expression is evaluated once per (values of the job attributes *it* reads, entry),
so a cycle costs at most clusters x entries evaluations and usually far fewer.
Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import classad2
import htcondor2  # noqa: F401  (registers HTCondor's ClassAd functions: stringListMember, split...)

from gwms.frontend.clustering import (
    AttributeRefs,
    ClusterSet,
    ExprText,
    JobCluster,
    build_ad,
    expression_refs,
    parse_expr,
)

GLIDEIN_START = "GLIDEIN_Start"
GLIDEIN_CPUS = "GLIDEIN_CPUS"
GLIDEIN_ESTIMATED_CPUS = "GLIDEIN_ESTIMATED_CPUS"

Expr = str | classad2.ExprTree


@dataclass(frozen=True)
class EntryMatch:
    """What one entry could serve this cycle (glideinWMS: count, prop, hereonly, real)."""

    entry: str
    matching_idle: int  # idle jobs matching this entry (a job matching k entries counts in k)
    effective_idle: float  # sum of 1/k over matching idle jobs
    effective_idle_glideins: int  # ceil(sum of RequestCpus/k) / GLIDEIN_CPUS, rounded up
    effective_old_idle_glideins: int  # the same for idle jobs older than 10 minutes
    unique_idle: int  # idle jobs that match this entry only
    matching_running: int  # running jobs (anywhere) that match this entry
    running_here: int  # running jobs that run on glideins of this entry


@dataclass(frozen=True)
class MatchResult:
    """Per-entry counts of one group's cycle."""

    entries: dict[str, EntryMatch]
    unmatched_idle: int
    evaluations: int  # classad2 evaluations performed (for benchmarks and tests)


def entry_start(entry: classad2.ClassAd) -> classad2.ExprTree | None:
    """The entry's start expression: an expression attribute, or its text as a string."""
    if GLIDEIN_START not in entry:
        return None
    value = entry.get(GLIDEIN_START)
    if isinstance(value, str):
        return parse_expr(value)
    return entry.lookup(GLIDEIN_START)


def match_refs(
    match_expr: Expr | None,
    entries: Mapping[str, classad2.ClassAd],
    *,
    group_start: Expr | None = None,
) -> AttributeRefs:
    """Attributes read by the match expression and all start expressions (not Requirements)."""
    refs = AttributeRefs()
    if match_expr is not None:
        refs |= expression_refs(match_expr, my="job")
    if group_start is not None:
        refs |= expression_refs(group_start, my="entry")
    for text in {str(s) for e in entries.values() if (s := entry_start(e)) is not None}:
        refs |= expression_refs(text, my="entry")
    return refs


def glidein_cpus(entry: classad2.ClassAd) -> int:
    """Cores of one glidein of *entry*: GLIDEIN_CPUS, or GLIDEIN_ESTIMATED_CPUS when "auto"."""
    for name in (GLIDEIN_CPUS, GLIDEIN_ESTIMATED_CPUS):
        value = entry.get(name)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return 1


def is_true(value: Any) -> bool:
    """ClassAd truth for matchmaking: true or a non-zero number; UNDEFINED/ERROR are false."""
    if value is True:
        return True
    return type(value) in (int, float) and value != 0


class _Compiled:
    """One expression, the job attributes it reads, and per-signature entry bitmasks.

    Bit i stands for entry i. ``known[sig]`` marks the entries evaluated for that job
    signature, ``passed[sig]`` those that matched; ``scope`` the entries the
    expression applies to (an entry's own start expression applies to that entry only).
    """

    __slots__ = ("job_first", "known", "names", "passed", "scope", "tree")

    def __init__(self, tree: classad2.ExprTree, names: tuple[str, ...], *, job_first: bool):
        self.tree = tree
        self.names = names
        self.job_first = job_first
        self.scope = 0
        self.known: dict[tuple[Any, ...], int] = {}
        self.passed: dict[tuple[Any, ...], int] = {}


class _Evaluator:
    """Evaluates compiled expressions for (job signature, entry) pairs, each pair once."""

    def __init__(self, clusters: ClusterSet, entries: Sequence[classad2.ClassAd]):
        self.key_attributes = clusters.key_attributes
        self.entries = entries
        self._lowered = {n.lower(): n for n in clusters.key_attributes}
        # Attributes holding an expression in some cluster: their refs are transitive, so
        # expressions reading them are evaluated on the whole signature.
        self._expr_valued = {
            name
            for c in clusters.clusters
            for name, value in c.attributes.items()
            if isinstance(value, ExprText) and name.lower() != "requirements"
        }
        self._compiled: dict[tuple[str, bool], _Compiled] = {}
        self._ads: dict[tuple[tuple[str, ...], tuple[Any, ...]], classad2.ClassAd] = {}
        self.evaluations = 0

    def compile(self, expr: Expr, *, my: str, scope: int) -> _Compiled:
        text_key = (str(expr), my == "job")
        compiled = self._compiled.get(text_key)
        if compiled is None:
            tree = parse_expr(expr)
            key = (str(tree), my == "job")
            compiled = self._compiled.get(key)
        if compiled is None:
            lowered = self._lowered
            refs = expression_refs(tree, my=my).job
            names = tuple(sorted({lowered[n.lower()] for n in refs if n.lower() in lowered}))
            if self._expr_valued & set(names):
                names = self.key_attributes
            compiled = self._compiled[key] = _Compiled(tree, names, job_first=my == "job")
        self._compiled[text_key] = compiled
        compiled.scope |= scope
        return compiled

    def passed(self, compiled: _Compiled, cluster: JobCluster, candidates: int) -> int:
        """Bitmask of the *candidates* (within the expression's scope) it matches."""
        attrs = cluster.attributes
        sig = tuple(attrs[n] for n in compiled.names)
        known = compiled.known.get(sig, 0)
        passed = compiled.passed.get(sig, 0)
        need = candidates & compiled.scope & ~known
        if need:
            job = self._job_ad(compiled.names, sig)
            tree, entries = compiled.tree, self.entries
            bits = need
            while bits:
                low = bits & -bits
                entry = entries[low.bit_length() - 1]
                if compiled.job_first:
                    value = tree.eval(scope=job, target=entry)
                else:
                    value = tree.eval(scope=entry, target=job)
                if is_true(value):
                    passed |= low
                bits ^= low
                self.evaluations += 1
            compiled.known[sig] = known | need
            compiled.passed[sig] = passed
        return passed & candidates

    def _job_ad(self, names: tuple[str, ...], sig: tuple[Any, ...]) -> classad2.ClassAd:
        key = (names, sig)
        ad = self._ads.get(key)
        if ad is None:
            ad = self._ads[key] = build_ad(dict(zip(names, sig, strict=True)))
        return ad


def match_clusters(
    clusters: ClusterSet,
    entries: Mapping[str, classad2.ClassAd],
    match_expr: Expr | None = None,
    *,
    group_start: Expr | None = None,
) -> MatchResult:
    """Count, per entry, the idle and running jobs of *clusters* that it could serve.

    *entries* maps the entry name (as the factory advertises it; running jobs'
    ``MATCH_EXP_JOB_GLIDEIN_Entry_Name`` must use the same names) to its entry ad.
    A missing match or start expression is true; a job without Requirements matches
    nothing. A job matching k entries counts 1/k to each (glideinWMS "effective idle").
    """
    names = list(entries)
    ads = [entries[n] for n in names]
    every = (1 << len(ads)) - 1
    ev = _Evaluator(clusters, ads)
    checks = []
    if match_expr is not None:
        checks.append(ev.compile(match_expr, my="job", scope=every))
    if group_start is not None:
        checks.append(ev.compile(group_start, my="entry", scope=every))
    starts: dict[int, _Compiled] = {}
    for i, ad in enumerate(ads):
        start = entry_start(ad)
        if start is not None:
            compiled = ev.compile(start, my="entry", scope=1 << i)
            starts[id(compiled)] = compiled

    matched: list[tuple[JobCluster, int]] = []
    for cluster in clusters.clusters:
        req_text = cluster.requirements
        if req_text is None:
            matched.append((cluster, 0))
            continue
        mask = every
        for check in (*checks, ev.compile(req_text, my="job", scope=every)):
            mask = ev.passed(check, cluster, mask)
            if not mask:
                break
        for start in starts.values():
            if not mask:
                break
            mask = (mask & ~start.scope) | ev.passed(start, cluster, mask)
        matched.append((cluster, mask))
    return _tally(matched, names, ads, ev.evaluations)


def _tally(
    matched: Sequence[tuple[JobCluster, int]],
    names: Sequence[str],
    ads: Sequence[classad2.ClassAd],
    evaluations: int,
) -> MatchResult:
    n = len(names)
    count = [0] * n
    prop = [0.0] * n
    prop_cores = [0.0] * n
    prop_old_cores = [0.0] * n
    unique = [0] * n
    running = [0] * n
    unmatched = 0
    for cluster, mask in matched:
        if not mask:
            unmatched += cluster.idle
            continue
        hits = _bits(mask)
        k = len(hits)
        share = cluster.idle / k
        cores = share * cluster.request_cpus
        old_cores = cluster.old_idle / k * cluster.request_cpus
        for i in hits:
            count[i] += cluster.idle
            prop[i] += share
            prop_cores[i] += cores
            prop_old_cores[i] += old_cores
            running[i] += cluster.running
            if k == 1:
                unique[i] += cluster.idle
    here = dict.fromkeys(names, 0)
    for cluster, _ in matched:
        for entry, jobs in cluster.running_on.items():
            if entry in here:
                here[entry] += jobs
    result = {}
    for i, name in enumerate(names):
        cpus = glidein_cpus(ads[i])
        result[name] = EntryMatch(
            entry=name,
            matching_idle=count[i],
            effective_idle=prop[i],
            effective_idle_glideins=_ceil(prop_cores[i] / cpus),
            effective_old_idle_glideins=_ceil(prop_old_cores[i] / cpus),
            unique_idle=unique[i],
            matching_running=running[i],
            running_here=here[name],
        )
    return MatchResult(result, unmatched, evaluations)


def _bits(mask: int) -> list[int]:
    """Indexes of the set bits of *mask*."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _ceil(value: float) -> int:
    """Round up, forgiving float noise from summing 1/k shares (3 x 1/3 is 1, not 2)."""
    return math.ceil(round(value, 9))
