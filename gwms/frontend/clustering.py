"""Group idle and running jobs into clusters of equal match-relevant attributes.

The frontend cycle must scale with the number of distinct job *signatures*, not
jobs: two jobs whose Requirements text and every attribute that the match
expression, the Requirements or the entries' start expressions read are equal
match exactly the same entries, so they are matched once. Pure functions, no I/O:
the daemon queries the schedd with :func:`job_projection` and passes the rows in.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from operator import itemgetter
from typing import Any

import classad2

JOB_STATUS = "JobStatus"
REQUIREMENTS = "Requirements"
REQUEST_CPUS = "RequestCpus"
ENTERED_CURRENT_STATUS = "EnteredCurrentStatus"
# Set by the glidein's startd (glideinWMS convention) on jobs it runs: the entry the job runs on.
RUNNING_ON = "MATCH_EXP_JOB_GLIDEIN_Entry_Name"
IDLE = 1
RUNNING = 2
# glideinWMS counts an idle job as "old" after 10 minutes; old idle jobs earn reserve glideins.
OLD_IDLE_SECONDS = 600

_SCOPES = ("my", "target")


class ExprText(str):
    """An attribute value that is a ClassAd expression (not a literal), kept as its text.

    Hashable, so it can be part of a cluster signature; parsed back to an expression
    when the representative ad is built.
    """

    __slots__ = ()


@dataclass(frozen=True)
class AttributeRefs:
    """Attribute names an expression reads, split by the ad they are read from."""

    job: frozenset[str] = frozenset()
    entry: frozenset[str] = frozenset()

    def __or__(self, other: AttributeRefs) -> AttributeRefs:
        return AttributeRefs(self.job | other.job, self.entry | other.entry)


def parse_expr(expr: str | classad2.ExprTree) -> classad2.ExprTree:
    """Return *expr* as an ExprTree, parsing text once."""
    return expr if isinstance(expr, classad2.ExprTree) else classad2.ExprTree(str(expr))


def expression_refs(expr: str | classad2.ExprTree, *, my: str) -> AttributeRefs:
    """Attributes *expr* reads, when evaluated with MY = the *my* ad ("job" or "entry").

    ``MY.x`` is read from the MY ad, ``TARGET.x`` from the other one. An unscoped ``x``
    is looked up in MY first and then in TARGET, so it counts on both sides; a nested
    reference ``x.y`` reads attribute ``x``. classad2 finds the names; once htcondor2 is
    imported it reports ``MY.x`` as plain ``x``, so the expression text tells them apart
    (a name that also occurs unscoped, even inside a string literal, counts on both sides).
    """
    if my not in ("job", "entry"):
        raise ValueError(f"my must be 'job' or 'entry', not {my!r}")
    tree = parse_expr(expr)
    text = str(tree)
    mine: set[str] = set()
    other: set[str] = set()
    for ref in classad2.ClassAd().externalRefs(tree):
        if not ref:
            continue
        parts = ref.split(".")
        scope = parts[0].lower()
        if scope in _SCOPES and len(parts) > 1:
            (mine if scope == "my" else other).add(parts[1])
        elif _only_my_scoped(parts[0], text):
            mine.add(parts[0])
        else:
            mine.add(parts[0])
            other.add(parts[0])
    job, entry = (mine, other) if my == "job" else (other, mine)
    return AttributeRefs(frozenset(job), frozenset(entry))


def _only_my_scoped(name: str, text: str) -> bool:
    """True when every occurrence of *name* in the unparsed *text* is written ``MY.name``."""
    pattern = re.compile(rf"(?<![\w.])(?:(\w+)\.)?{re.escape(name)}(?![\w])", re.IGNORECASE)
    prefixes = [m.group(1) for m in pattern.finditer(text)]
    return bool(prefixes) and all(p is not None and p.lower() == "my" for p in prefixes)


def job_projection(
    refs: AttributeRefs | Iterable[str], *, extra: Iterable[str] = ()
) -> tuple[str, ...]:
    """The job attributes the daemon must ask the schedd for.

    *refs* are the refs of the match and start expressions (the Requirements' own refs
    are found later by :func:`cluster_jobs`; it reports the ones the rows lack in
    ``ClusterSet.missing`` so the next query widens the projection).
    """
    names = refs.job if isinstance(refs, AttributeRefs) else frozenset(refs)
    fixed = (JOB_STATUS, REQUIREMENTS, REQUEST_CPUS, RUNNING_ON, ENTERED_CURRENT_STATUS)
    seen = {n.lower() for n in fixed}
    rest = []
    for name in sorted({*names, *extra}, key=str.lower):
        if name.lower() not in seen:
            seen.add(name.lower())
            rest.append(name)
    return (*fixed, *rest)


def plain_value(value: Any) -> Any:
    """Convert one ClassAd value to a hashable Python value (None when undefined)."""
    if isinstance(value, classad2.ExprTree):
        return ExprText(str(value))
    if isinstance(value, classad2.Value):
        return None
    if isinstance(value, list):
        return tuple(plain_value(v) for v in value)
    if isinstance(value, classad2.ClassAd):
        return ExprText(str(value))
    return value


@dataclass(frozen=True)
class JobRows:
    """What a schedd query with a projection returns: one tuple per job, in column order.

    Values are plain Python values; None means the job does not define the attribute;
    expression-valued attributes are :class:`ExprText`. This is what the cycle clusters
    on: 500k classad2 job ads would cost seconds to build and gigabytes to hold.
    """

    columns: tuple[str, ...]
    rows: Sequence[tuple[Any, ...]]

    @classmethod
    def from_ads(cls, ads: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> JobRows:
        """Project job ads (classad2 ads or dicts) onto *columns*."""
        cols = tuple(columns)
        return cls(cols, [tuple(plain_value(ad.get(c)) for c in cols) for ad in ads])

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class JobCluster:
    """Jobs with equal signature: they match the same entries."""

    signature: tuple[Any, ...]
    attributes: Mapping[str, Any]
    idle: int = 0
    old_idle: int = 0
    running: int = 0
    running_on: dict[str, int] = field(default_factory=dict)

    @property
    def requirements(self) -> str | None:
        value = self.attributes.get(REQUIREMENTS)
        return None if value is None else str(value)

    @property
    def request_cpus(self) -> int:
        """Cores one job asks for; 1 when unset or not a positive number (glideinWMS too)."""
        value = self.attributes.get(REQUEST_CPUS)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
            return 1
        return math.ceil(value)

    @cached_property
    def ad(self) -> classad2.ClassAd:
        """A representative job ad holding the signature attributes (None left undefined)."""
        return build_ad(self.attributes)


def build_ad(attributes: Mapping[str, Any]) -> classad2.ClassAd:
    """A ClassAd from plain values; ExprText values become expressions."""
    ad = classad2.ClassAd()
    for name, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, ExprText) or name.lower() == REQUIREMENTS.lower():
            ad[name] = classad2.ExprTree(str(value))
        elif isinstance(value, tuple):
            ad[name] = list(value)
        else:
            ad[name] = value
    return ad


@dataclass(frozen=True)
class ClusterSet:
    """The clusters of one query, and which referenced attributes the rows did not carry."""

    key_attributes: tuple[str, ...]
    clusters: list[JobCluster]
    missing: frozenset[str]
    jobs: int

    @property
    def idle(self) -> int:
        return sum(c.idle for c in self.clusters)

    @property
    def running(self) -> int:
        return sum(c.running for c in self.clusters)


def _getter(indexes: Sequence[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """itemgetter that always returns a tuple (itemgetter(i) alone returns a scalar)."""
    if len(indexes) == 1:
        (i,) = indexes
        return lambda row: (row[i],)
    return itemgetter(*indexes)


def _column_index(columns: Sequence[str]) -> dict[str, int]:
    """Case-insensitive column lookup: ClassAd attribute names are case-insensitive."""
    index: dict[str, int] = {}
    for i, name in enumerate(columns):
        index.setdefault(name.lower(), i)
    return index


def _requirements_refs(texts: Iterable[Any]) -> set[str]:
    names: set[str] = set()
    for text in texts:
        if text is not None:
            names |= expression_refs(str(text), my="job").job
    return names


def _expression_value_refs(values: Iterable[Any]) -> set[str]:
    """Job attributes read by expression-valued attributes (e.g. RequestMemory = f(MemoryUsage))."""
    names: set[str] = set()
    for value in values:
        if isinstance(value, ExprText):
            names |= expression_refs(value, my="job").job
    return names


def cluster_jobs(
    jobs: JobRows, refs: AttributeRefs | Iterable[str], *, now: int | None = None
) -> ClusterSet:
    """Cluster *jobs* on Requirements plus every job attribute the match reads.

    *refs* are the refs of the match expression and the start expressions; the refs of
    every distinct Requirements text are added here. Idle (JobStatus 1) and running (2)
    jobs are counted; other states are ignored. With *now*, idle jobs whose
    EnteredCurrentStatus is older than 10 minutes are also counted as ``old_idle``.
    Work is one C-level pass over the rows plus Python work per distinct signature.
    """
    index = _column_index(jobs.columns)
    status_i = index.get(JOB_STATUS.lower())
    if status_i is None:
        raise ValueError(f"job rows have no {JOB_STATUS} column; query it with job_projection()")
    req_i = index.get(REQUIREMENTS.lower())
    static = refs.job if isinstance(refs, AttributeRefs) else frozenset(refs)
    wanted = {*static, REQUIREMENTS, REQUEST_CPUS}
    if req_i is not None:
        wanted |= _requirements_refs(set(map(itemgetter(req_i), jobs.rows)))
    while True:
        key_names = sorted({n for n in wanted if n.lower() in index}, key=str.lower)
        counts = _count(jobs, index, [index[n.lower()] for n in key_names], status_i, now)
        more = _expression_value_refs(v for key in counts for v in key[0]) - wanted
        if not {n for n in more if n.lower() in index}:
            wanted |= more
            break
        wanted |= more
    present = {n.lower() for n in key_names}
    missing = frozenset(
        n for n in wanted if n.lower() not in present and n not in (REQUIREMENTS, REQUEST_CPUS)
    )
    return ClusterSet(tuple(key_names), _fold(counts, key_names), missing, len(jobs.rows))


def _count(
    jobs: JobRows, index: Mapping[str, int], key_idx: Sequence[int], status_i: int, now: int | None
) -> Counter[tuple[Any, ...]]:
    """Count rows by (signature, status, running-on entry, old) in one C-level pass."""
    rows = jobs.rows
    parts: list[Iterator[Any]] = [map(_getter(key_idx), rows), map(itemgetter(status_i), rows)]
    on_i = index.get(RUNNING_ON.lower())
    parts.append(map(itemgetter(on_i), rows) if on_i is not None else repeat(None, len(rows)))
    ecs_i = index.get(ENTERED_CURRENT_STATUS.lower())
    if now is not None and ecs_i is not None:
        cutoff = now - OLD_IDLE_SECONDS
        parts.append(map(lambda t: t is not None and t < cutoff, map(itemgetter(ecs_i), rows)))
    else:
        parts.append(repeat(None, len(rows)))
    return Counter(zip(*parts, strict=True))


def _fold(counts: Counter[tuple[Any, ...]], key_names: Sequence[str]) -> list[JobCluster]:
    clusters: dict[tuple[Any, ...], JobCluster] = {}
    for (key, status, on, old), n in counts.items():
        if status not in (IDLE, RUNNING):
            continue
        cluster = clusters.get(key)
        if cluster is None:
            cluster = clusters[key] = JobCluster(key, dict(zip(key_names, key, strict=True)))
        if status == IDLE:
            cluster.idle += n
            if old:
                cluster.old_idle += n
        else:
            cluster.running += n
            if on is not None:
                cluster.running_on[str(on)] = cluster.running_on.get(str(on), 0) + n
    return list(clusters.values())
