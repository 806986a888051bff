"""How many glideins one frontend group asks an entry for: requested idle, max running, removal.

A pure function of the numbers (matched jobs, the entry's glideins, limits, curbs and
the removal history), after glideinWMS's ``glideinFrontendElement``
(``compute_glidein_min_idle``, ``compute_glidein_max_run``, ``choose_remove_excess_type``).
Every limit or curb that cut the request leaves a one-line reason for the monitoring ad.
The formulas and where they differ from glideinWMS are in docs/frontend-policy.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum


class RemoveExcess(IntEnum):
    """What the factory may remove from this request's glideins; higher removes more."""

    NO = 0  # remove nothing
    WAIT = 1  # remove glideins still waiting to be provisioned
    IDLE = 2  # also remove booted glideins running no job
    ALL = 3  # remove every glidein of this request


@dataclass(frozen=True)
class RequestPolicy:
    """Per-entry knobs of one group (glideinWMS group config names in comments)."""

    max_running: int = 10000  # running_glideins_per_entry max (MaxRunningPerEntry)
    min_running: int = 0  # running_glideins_per_entry min (MinRunningPerEntry)
    fraction_running: float = 1.15  # running_glideins_per_entry relative_to_queue
    max_idle_request: int = 100  # idle_glideins_per_entry max (MaxIdlePerEntry): cap of a request
    reserve_idle: int = 5  # idle_glideins_per_entry reserve (ReserveIdlePerEntry)
    max_idle_glideins: int = 100  # idle_vms_per_entry max (MaxIdleVMsPerEntry)
    curb_idle_glideins: int = 5  # idle_vms_per_entry curb (CurbIdleVMsPerEntry)
    ramp_up_attenuation: float = 3.0  # RampUpAttenuation
    removal: RemoveExcess = RemoveExcess.NO  # glideins_removal type (RemovalType)
    removal_wait: int = 0  # glideins_removal wait, in cycles without idle jobs (RemovalWait)

    def __post_init__(self) -> None:
        if self.ramp_up_attenuation < 1:
            raise ValueError("ramp_up_attenuation must be >= 1")
        if self.fraction_running <= 0:
            raise ValueError("fraction_running must be > 0")


@dataclass(frozen=True)
class ScopeLimit:
    """Glideins counted over a scope (a group, the frontend, the pool) and its limits.

    ``name`` opens the reason strings ("group main", "frontend", "global"). ``glideins``
    counts every glidein of the scope (idle, running, held); ``idle`` the idle ones.
    A limit or curb of None does not apply.
    """

    name: str
    glideins: int
    idle: int
    max_running: int | None = None
    curb_running: int | None = None
    max_idle: int | None = None
    curb_idle: int | None = None


@dataclass(frozen=True)
class Glideins:
    """This group's glideins at one entry, from the factory's monitoring ad."""

    total: int = 0
    idle: int = 0
    running: int = 0


@dataclass(frozen=True)
class Demand:
    """What matching found for one entry, in glideins (cores already divided by GLIDEIN_CPUS)."""

    entry: str
    idle: int  # effective idle glideins (EntryMatch.effective_idle_glideins)
    old_idle: int = 0  # the same for idle jobs older than 10 minutes
    matching_idle_jobs: int = 0  # idle jobs matching the entry (drives removal)
    running_here: int = 0  # jobs running on glideins of this entry


@dataclass(frozen=True)
class RemovalHistory:
    """Consecutive cycles with no idle jobs, all glideins idle, no glideins (per entry)."""

    no_idle_jobs: int = 0
    glideins_all_idle: int = 0
    no_glideins: int = 0


# Cycles before removal escalates (glideinWMS choose_remove_excess_type).
WAIT_AFTER_CYCLES = 5
IDLE_AFTER_CYCLES = 10
ALL_AFTER_CYCLES = 10


@dataclass(frozen=True)
class Request:
    """The decision for one group x entry; the daemon puts it in the request ad."""

    entry: str
    requested_idle: int
    max_running: int
    remove_excess: RemoveExcess
    history: RemovalHistory
    reasons: tuple[str, ...] = field(default=())


def compute_request(
    demand: Demand,
    glideins: Glideins,
    policy: RequestPolicy,
    scopes: Sequence[ScopeLimit] = (),
    *,
    history: RemovalHistory | None = None,
    in_downtime: bool = False,
    already_requested: int = 0,
) -> Request:
    """Requested idle glideins, max running glideins and removal mode for one entry.

    *scopes* are the wider totals (group, frontend, global). *already_requested* is
    what earlier entries of the same cycle were granted; it is taken from the wider
    scopes' headroom so one cycle cannot overshoot a group limit 200 entries at a time.
    """
    history = history or RemovalHistory()
    remove, history = decide_removal(demand, glideins, policy, history)
    if in_downtime:
        return Request(demand.entry, 0, 0, remove, history, (f"entry {demand.entry} in downtime",))
    reasons: list[str] = []
    entry_scope = ScopeLimit(
        f"entry {demand.entry}",
        glideins.total,
        glideins.idle,
        max_running=policy.max_running,
        max_idle=policy.max_idle_glideins,
        curb_idle=policy.curb_idle_glideins,
    )
    all_scopes = (entry_scope, *scopes)
    wanted = max(demand.idle, policy.min_running)
    if wanted > demand.idle:
        reasons.append(f"entry {demand.entry} min_running {policy.min_running} raised the request")
    effective = max(wanted - glideins.idle, 0)
    effective_old = max(demand.old_idle - glideins.idle, 0)
    requested = _requested_idle(
        effective,
        effective_old,
        policy,
        all_scopes,
        already_requested=already_requested,
        reasons=reasons,
    )
    max_run = _max_running(wanted, demand.running_here, glideins.idle, policy)
    if max_run > policy.max_running:
        max_run = policy.max_running
        reasons.append(f"entry {demand.entry} max_running {policy.max_running} capped max running")
    return Request(demand.entry, requested, max_run, remove, history, tuple(reasons))


def _requested_idle(
    effective: int,
    old_idle: int,
    policy: RequestPolicy,
    scopes: Sequence[ScopeLimit],
    *,
    already_requested: int,
    reasons: list[str],
) -> int:
    """glideinWMS compute_glidein_min_idle, over a list of scopes (the entry's first)."""
    reached = _limits_reached(scopes)
    if reached:
        reasons.extend(reached)
        return 0
    if effective <= 0:
        return 0
    request, binding = effective, ""
    for n, s in enumerate(scopes):
        granted = already_requested if n else 0  # earlier entries used the wider scopes only
        for kind, limit, count in (
            ("max_running", s.max_running, s.glideins),
            ("max_idle", s.max_idle, s.idle),
        ):
            if limit is not None and limit - count - granted < request:
                request = max(limit - count - granted, 0)
                binding = f"{s.name} {kind} {limit} limited the request to {request}"
    if binding:
        reasons.append(binding)
    if request == 0:
        return 0
    request = int(request / policy.ramp_up_attenuation)
    request += min(old_idle // 3, policy.reserve_idle)
    if request > policy.max_idle_request:
        request = policy.max_idle_request
        reasons.append(f"{scopes[0].name} max_idle_request {request} capped the request")
    value = float(request)
    for s in scopes:
        if s.curb_idle is not None and s.idle >= s.curb_idle:
            value /= 2
            reasons.append(f"{s.name} curb_idle {s.curb_idle} reached ({s.idle} idle): halved")
        if s.curb_running is not None and s.glideins >= s.curb_running:
            value /= 2
            reasons.append(
                f"{s.name} curb_running {s.curb_running} reached ({s.glideins} glideins): halved"
            )
    return max(int(value), 1)


def _limits_reached(scopes: Sequence[ScopeLimit]) -> list[str]:
    reasons = []
    for s in scopes:
        if s.max_running is not None and s.glideins >= s.max_running:
            reasons.append(f"{s.name} max_running {s.max_running} reached ({s.glideins} glideins)")
        if s.max_idle is not None and s.idle >= s.max_idle:
            reasons.append(f"{s.name} max_idle {s.max_idle} reached ({s.idle} idle)")
    return reasons


def _max_running(wanted: int, running_here: int, idle_glideins: int, policy: RequestPolicy) -> int:
    """glideinWMS compute_glidein_max_run: jobs to run here, plus a fraction for slack."""
    if wanted > 0:
        return int((max(wanted - idle_glideins, 0) + running_here) * policy.fraction_running + 1)
    return running_here


def decide_removal(
    demand: Demand, glideins: Glideins, policy: RequestPolicy, history: RemovalHistory
) -> tuple[RemoveExcess, RemovalHistory]:
    """glideinWMS choose_remove_excess_type + the configured removal, with explicit history.

    No idle jobs for more than 5 cycles: WAIT; and all glideins idle for more than 10:
    IDLE; and no glideins at all for more than 10: ALL. The configured removal applies
    once there were no idle jobs for more than ``removal_wait`` cycles; the larger wins.
    """
    no_idle = history.no_idle_jobs + 1 if demand.matching_idle_jobs == 0 else 0
    all_idle = history.glideins_all_idle + 1 if glideins.idle >= glideins.total else 0
    none = history.no_glideins + 1 if glideins.total == 0 else 0
    wait = no_idle > WAIT_AFTER_CYCLES
    if wait and none > ALL_AFTER_CYCLES:
        auto = RemoveExcess.ALL
    elif wait and all_idle > IDLE_AFTER_CYCLES:
        auto = RemoveExcess.IDLE
    elif wait:
        auto = RemoveExcess.WAIT
    else:
        auto = RemoveExcess.NO
    configured = policy.removal if no_idle > policy.removal_wait else RemoveExcess.NO
    return max(auto, configured), RemovalHistory(no_idle, all_idle, none)


def compute_group_requests(
    demands: Sequence[Demand],
    glideins: Mapping[str, Glideins],
    policy: RequestPolicy,
    group: ScopeLimit,
    wider: Sequence[ScopeLimit] = (),
    *,
    history: Mapping[str, RemovalHistory] | None = None,
    downtime: frozenset[str] = frozenset(),
) -> list[Request]:
    """Requests for all entries of one group, in entry-name order, sharing the headroom."""
    history = history or {}
    requests = []
    granted = 0
    for demand in sorted(demands, key=lambda d: d.entry):
        request = compute_request(
            demand,
            glideins.get(demand.entry, Glideins()),
            policy,
            (group, *wider),
            history=history.get(demand.entry),
            in_downtime=demand.entry in downtime,
            already_requested=granted,
        )
        granted += request.requested_idle
        requests.append(request)
    return requests


def group_scope(name: str, glideins: Mapping[str, Glideins], **limits: int | None) -> ScopeLimit:
    """A group's scope from its per-entry glidein counts."""
    total = sum(g.total for g in glideins.values())
    idle = sum(g.idle for g in glideins.values())
    return replace(ScopeLimit(f"group {name}", total, idle), **limits)
