"""What the factory should do this cycle, as pure functions of what it knows (no I/O).

Inputs: the verified requests, the journal's glideins and unsettled batches, the cloud
listings, the entries' limits and the clock (epoch seconds). Outputs: state transitions,
VMs to adopt or terminate, batches to look up by tag, and batches to launch. The daemon
does the I/O; these functions are tested table-driven and benchmarked alone.

Counting (glideinWMS terms): a glidein is *idle* while the cloud has it pending
(`launching`) or its batch is still unsettled, *running* once the cloud runs it (retiring
ones count as running). Terminating ones and zombies are never capacity.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gwms.factory.journal import GlideinRecord, GlideinState
from gwms.factory.providers.base import Instance, InstanceState
from gwms.protocol.request import RemoveExcess

Key = tuple[str, str]  # (entry, client)

IDLE_STATES = frozenset({GlideinState.LAUNCHING})
RUNNING_STATES = frozenset({GlideinState.RUNNING, GlideinState.RETIRING})
ALIVE_STATES = IDLE_STATES | RUNNING_STATES

# Names of the limits that can cut a request, as reported in monitoring ads.
LIMIT_ENTRY_DISABLED = "entry_disabled"
LIMIT_REQUEST_MAX = "request_max_running"
LIMIT_ENTRY_MAX = "entry_max_running"
LIMIT_ENTRY_IDLE = "entry_max_idle"
LIMIT_PER_FRONTEND = "entry_max_per_frontend"
LIMIT_FRONTEND_MAX = "frontend_max_glideins"
LIMIT_PER_CYCLE = "entry_max_launches_per_cycle"


@dataclass(frozen=True)
class EntryPolicy:
    """An entry's limits and lifetimes, as the decisions need them."""

    name: str
    enabled: bool = True
    max_running: int = 100
    max_idle: int = 10
    max_per_frontend: int | None = None
    max_launches_per_cycle: int = 20
    max_lifetime: int = 86400
    retire_after: int = 72000


@dataclass(frozen=True)
class ClientRequest:
    """A verified request: what one frontend group asks of one entry."""

    entry: str
    client: str
    frontend: str
    idle: int
    max_running: int
    remove_excess: RemoveExcess
    issued_at: int

    @property
    def key(self) -> Key:
        return (self.entry, self.client)


@dataclass(frozen=True)
class PendingBatch:
    """A batch journaled `launching` whose VMs are not known yet: counted as idle."""

    batch_id: str
    entry: str
    client: str
    frontend: str
    count: int


@dataclass(frozen=True)
class Policy:
    """The factory's own knobs (not per entry)."""

    fresh_all_seconds: int = 300  # a RemoveExcess ALL older than this does not touch running VMs
    wait_seconds: int = 600  # RemoveExcess WAIT: idle this long before it goes
    listing_grace: int = 120  # a VM launched this recently may be missing from listings
    terminate_timeout: int = 600  # a terminating VM still listed this long is asked again
    zombie_after: int = 3  # refusals before a VM counts as a zombie
    backoff_initial: int = 60  # zombie retry backoff, doubled per refusal
    backoff_max: int = 3600


@dataclass(frozen=True)
class LaunchPlan:
    """Launch one batch of `count` VMs of `entry` for `client`."""

    entry: str
    client: str
    frontend: str
    count: int


@dataclass(frozen=True)
class Termination:
    """Terminate one VM, and why (excess_idle, remove_all, max_lifetime, orphan, ...)."""

    glidein_id: str
    cloud_id: str
    provider_key: str
    reason: str


@dataclass(frozen=True)
class Transition:
    """Move a journaled glidein to `state`."""

    glidein_id: str
    state: GlideinState


@dataclass
class ClientStatus:
    """One (entry, client) after the decisions, for the monitoring ad."""

    idle: int = 0
    running: int = 0
    retiring: int = 0
    zombie: int = 0
    effective_idle: int = 0
    effective_max_running: int = 0
    limits_applied: list[str] = field(default_factory=list)


@dataclass
class Decision:
    """Everything a cycle decided."""

    terminations: list[Termination] = field(default_factory=list)
    launches: list[LaunchPlan] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    status: dict[Key, ClientStatus] = field(default_factory=dict)


# --- reconcile: journal vs. cloud listing --------------------------------------------------


@dataclass
class ListingDiff:
    """What a cloud listing says about the journal."""

    transitions: list[Transition] = field(default_factory=list)
    adopt: list[Instance] = field(default_factory=list)  # ours (batch journaled), row missing
    orphans: list[Instance] = field(default_factory=list)  # tagged by us, batch unknown
    broken: list[Termination] = field(default_factory=list)  # the cloud says error


def diff_listing(
    glideins: Sequence[GlideinRecord],
    listing: Sequence[Instance],
    known_batches: Iterable[str],
    now: int,
    policy: Policy = Policy(),
) -> ListingDiff:
    """Compare one provider's journaled glideins with its listing of live, tagged VMs."""
    diff = ListingDiff()
    by_id = {g.glidein_id: g for g in glideins}
    known = set(known_batches)
    seen: set[str] = set()
    for inst in listing:
        gid = inst.glidein_id
        record = by_id.get(gid)
        if record is None:
            if inst.state in (InstanceState.TERMINATED, InstanceState.TERMINATING):
                continue
            (diff.adopt if inst.batch_id in known else diff.orphans).append(inst)
            continue
        seen.add(gid)
        new = _state_from_cloud(record, inst)
        if new is not None and new != record.state:
            diff.transitions.append(Transition(gid, new))
        if inst.state is InstanceState.ERROR and record.state in ALIVE_STATES:
            diff.broken.append(Termination(gid, inst.cloud_id, record.provider_key, "cloud_error"))
    for record in glideins:
        if record.glidein_id in seen or record.state is GlideinState.GONE:
            continue
        settled = record.state in (GlideinState.TERMINATING, GlideinState.ZOMBIE)
        if settled or now - record.launched_at >= policy.listing_grace:
            diff.transitions.append(Transition(record.glidein_id, GlideinState.GONE))
    return diff


def _state_from_cloud(record: GlideinRecord, inst: Instance) -> GlideinState | None:
    cloud = inst.state
    if cloud is InstanceState.TERMINATED:
        return GlideinState.GONE
    if cloud is InstanceState.TERMINATING and record.state is not GlideinState.ZOMBIE:
        return GlideinState.TERMINATING
    if cloud is InstanceState.RUNNING and record.state is GlideinState.LAUNCHING:
        return GlideinState.RUNNING
    if record.state is GlideinState.GONE and cloud in (
        InstanceState.PENDING,
        InstanceState.RUNNING,
    ):
        # Listed again after we thought it gone (eventually consistent listings).
        return GlideinState.RUNNING if cloud is InstanceState.RUNNING else GlideinState.LAUNCHING
    return None


def cloud_state(inst: Instance) -> GlideinState:
    """The journal state a newly seen VM starts in."""
    if inst.state is InstanceState.RUNNING:
        return GlideinState.RUNNING
    if inst.state in (InstanceState.TERMINATING, InstanceState.TERMINATED):
        return (
            GlideinState.GONE
            if inst.state is InstanceState.TERMINATED
            else GlideinState.TERMINATING
        )
    return GlideinState.LAUNCHING


def settle_launching(found: Sequence[Instance], confirmed_absent: bool) -> str:
    """How a batch left `launching` is settled: "launched", "failed" or "unknown" (look again).

    Found by tag: launched. Nothing found, and the lookup is authoritative: the call did not
    happen (moto ignores ClientToken, so a retry would make a second batch): failed, and the
    next decision launches anew. A lookup that failed says nothing: stay launching.
    """
    if found:
        return "launched"
    return "failed" if confirmed_absent else "unknown"


# --- terminate outcomes and zombies ------------------------------------------------------------


def after_terminate(
    record: GlideinRecord, accepted: bool, now: int, policy: Policy = Policy()
) -> tuple[GlideinState, int, int]:
    """(state, attempts, next try) after a terminate call for `record`.

    A first accepted call makes it `terminating`, checked again after `terminate_timeout`.
    A refusal, or a VM still listed after an accepted call, counts as one refusal: after
    `zombie_after` of them it is a zombie, retried with exponential backoff.
    """
    first = record.state in ALIVE_STATES
    if accepted and first:
        return GlideinState.TERMINATING, record.terminate_attempts, now + policy.terminate_timeout
    attempts = record.terminate_attempts + 1
    state = GlideinState.ZOMBIE if attempts >= policy.zombie_after else GlideinState.TERMINATING
    delay = min(policy.backoff_max, policy.backoff_initial * 2 ** (attempts - 1))
    if accepted:
        delay = max(delay, policy.terminate_timeout)
    return state, attempts, now + delay


# --- the cycle's decisions -------------------------------------------------------------------


def decide(
    requests: Sequence[ClientRequest],
    glideins: Sequence[GlideinRecord],
    *,
    pending: Sequence[PendingBatch],
    entries: Mapping[str, EntryPolicy],
    frontend_max: Mapping[str, int],
    now: int,
    policy: Policy = Policy(),
) -> Decision:
    """Retire, reap, remove excess, retry stuck terminations, then plan launches within limits."""
    decision = Decision()
    doomed: set[str] = set()

    def terminate(record: GlideinRecord, reason: str) -> None:
        if record.glidein_id not in doomed:
            doomed.add(record.glidein_id)
            decision.terminations.append(
                Termination(record.glidein_id, record.cloud_id, record.provider_key, reason)
            )

    by_key: dict[Key, list[GlideinRecord]] = defaultdict(list)
    for record in glideins:
        entry = entries.get(record.entry)
        if record.state in ALIVE_STATES:
            if entry is not None and now >= record.launched_at + entry.max_lifetime:
                terminate(record, "max_lifetime")
                continue
            if (
                entry is not None
                and record.state is GlideinState.RUNNING
                and now >= record.launched_at + entry.retire_after
            ):
                decision.transitions.append(Transition(record.glidein_id, GlideinState.RETIRING))
            by_key[(record.entry, record.client)].append(record)
        elif record.state is GlideinState.ZOMBIE:
            if record.next_terminate_at is None or now >= record.next_terminate_at:
                terminate(record, "zombie_retry")
        elif record.state is GlideinState.TERMINATING:
            retry_at = record.next_terminate_at or record.updated_at + policy.terminate_timeout
            if now >= retry_at:
                terminate(record, "terminate_retry")

    for request in requests:
        for record, reason in _excess(request, by_key.get(request.key, []), now, policy):
            terminate(record, reason)

    tally, status = _tally(glideins, pending, doomed)
    decision.status = {**status, **{r.key: status[r.key] for r in requests}}
    _plan_launches(decision, requests, tally=tally, entries=entries, frontend_max=frontend_max)
    return decision


def _excess(
    request: ClientRequest, alive: Sequence[GlideinRecord], now: int, policy: Policy
) -> list[tuple[GlideinRecord, str]]:
    """The VMs a request asks to remove: newest first, idle before running."""
    mode = request.remove_excess
    if mode is RemoveExcess.NO:
        return []
    newest_first = sorted(alive, key=lambda g: (-g.launched_at, g.glidein_id))
    idle = [g for g in newest_first if g.state in IDLE_STATES]
    running = [g for g in newest_first if g.state in RUNNING_STATES]
    chosen: list[tuple[GlideinRecord, str]] = []
    extra_idle = max(0, len(idle) - request.idle)
    candidates = idle
    if mode is RemoveExcess.WAIT:
        candidates = [g for g in idle if now - g.launched_at >= policy.wait_seconds]
    chosen += [(g, "excess_idle") for g in candidates[:extra_idle]]
    fresh = now - request.issued_at <= policy.fresh_all_seconds
    if mode is RemoveExcess.ALL and fresh:
        taken = {c[0].glidein_id for c in chosen}
        left_idle = [g for g in idle if g.glidein_id not in taken]
        extra_total = len(left_idle) + len(running) - request.max_running
        for record in [*left_idle, *running][: max(0, extra_total)]:
            chosen.append((record, "remove_all"))
    return chosen


@dataclass
class _Tally:
    """Capacity in use, by client, entry and frontend, updated as launches are planned."""

    idle: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    running: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    entry_idle: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    entry_total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    frontend_entry: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    frontend_total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    launched_on: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, entry: str, client: str, frontend: str, count: int, *, idle: bool) -> None:
        if idle:
            self.idle[(entry, client)] += count
            self.entry_idle[entry] += count
        else:
            self.running[(entry, client)] += count
        self.entry_total[entry] += count
        self.frontend_entry[(frontend, entry)] += count
        self.frontend_total[frontend] += count


def _tally(
    glideins: Sequence[GlideinRecord], pending: Sequence[PendingBatch], doomed: set[str]
) -> tuple[_Tally, dict[Key, ClientStatus]]:
    tally = _Tally()
    status: dict[Key, ClientStatus] = defaultdict(ClientStatus)
    for g in glideins:
        key = (g.entry, g.client)
        if g.state is GlideinState.ZOMBIE:
            status[key].zombie += 1
        if g.state not in ALIVE_STATES or g.glidein_id in doomed:
            continue
        tally.add(g.entry, g.client, g.frontend, 1, idle=g.state in IDLE_STATES)
        if g.state is GlideinState.RETIRING:
            status[key].retiring += 1
        elif g.state is GlideinState.RUNNING:
            status[key].running += 1
    for b in pending:
        tally.add(b.entry, b.client, b.frontend, b.count, idle=True)
    for key, count in tally.idle.items():
        status[key].idle = count
    return tally, status


def _plan_launches(
    decision: Decision,
    requests: Sequence[ClientRequest],
    *,
    tally: _Tally,
    entries: Mapping[str, EntryPolicy],
    frontend_max: Mapping[str, int],
) -> None:
    """Launch up to what each request still lacks, cut by every limit in turn (sorted order)."""
    for request in sorted(requests, key=lambda r: r.key):
        key, entry = request.key, entries.get(request.entry)
        status = decision.status[key]
        if entry is None:
            continue
        per_frontend = (
            entry.max_per_frontend if entry.max_per_frontend is not None else entry.max_running
        )
        caps = (
            (LIMIT_REQUEST_MAX, request.max_running - tally.idle[key] - tally.running[key]),
            (LIMIT_ENTRY_MAX, entry.max_running - tally.entry_total[entry.name]),
            (LIMIT_ENTRY_IDLE, entry.max_idle - tally.entry_idle[entry.name]),
            (
                LIMIT_PER_FRONTEND,
                per_frontend - tally.frontend_entry[(request.frontend, entry.name)],
            ),
            (
                LIMIT_FRONTEND_MAX,
                frontend_max.get(request.frontend, 0) - tally.frontend_total[request.frontend],
            ),
            (LIMIT_PER_CYCLE, entry.max_launches_per_cycle - tally.launched_on[entry.name]),
        )
        count = max(0, request.idle - tally.idle[key])
        if count and not entry.enabled:
            count = 0
            status.limits_applied.append(LIMIT_ENTRY_DISABLED)
        for name, room in caps:
            if count > max(0, room):
                count = max(0, room)
                status.limits_applied.append(name)
        status.effective_max_running = max(
            0, min(request.max_running, entry.max_running, per_frontend)
        )
        status.effective_idle = min(request.idle, tally.idle[key] + count)
        if count > 0:
            decision.launches.append(
                LaunchPlan(request.entry, request.client, request.frontend, count)
            )
            tally.launched_on[entry.name] += count
            tally.add(entry.name, request.client, request.frontend, count, idle=True)
            status.idle = tally.idle[key]


__all__ = [
    "ClientRequest",
    "ClientStatus",
    "Decision",
    "EntryPolicy",
    "LaunchPlan",
    "ListingDiff",
    "PendingBatch",
    "Policy",
    "Termination",
    "Transition",
    "after_terminate",
    "cloud_state",
    "decide",
    "diff_listing",
    "settle_launching",
]
