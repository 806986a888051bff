"""The frontend cycle: the I/O around the pure decision core (clustering, matching, policy).

Each cycle reads everything it needs from the collectors and schedds (entry ads, jobs,
the factories' monitoring ads, its own previous requests), decides, and writes request,
credential and monitoring ads back. Nothing is kept on disk, so a restart or a crash at
any point loses nothing but the removal-escalation counters (which then start again from
zero: the frontend removes later, never sooner). Steps and log lines: docs/frontend.md.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import classad2

from gwms.classads import quote
from gwms.config.frontend import FrontendConfig, Group
from gwms.daemons import pool_mapping, stop_on_signals
from gwms.frontend.clustering import (
    RUNNING_ON,
    ClusterSet,
    JobRows,
    cluster_jobs,
    job_projection,
)
from gwms.frontend.credentials import CredentialChoice, choose_credential, load_credentials
from gwms.frontend.logging import BoundLogger, get_logger
from gwms.frontend.matching import EntryMatch, match_clusters, match_refs
from gwms.frontend.policy import (
    Demand,
    Glideins,
    RemovalHistory,
    Request,
    RequestPolicy,
    ScopeLimit,
    compute_group_requests,
    compute_request,
    group_scope,
)
from gwms.pool import Collector, PoolError, Schedd, open_collector, open_schedd
from gwms.protocol import (
    EntryAd,
    ProtocolError,
    RemoveExcess,
    ResourceAd,
    build_credential_ad,
    build_request_ad,
    build_resource_ad,
    make_credential_ad,
    make_request,
    parse_entry_ad,
    parse_factory_client_ad,
)
from gwms.protocol.wire import ad_name, client_name

# Set by the glidein's startd on the jobs it runs, next to the entry name (glideinWMS).
RUNNING_FACTORY = "MATCH_EXP_JOB_GLIDEIN_Factory"
OURS = "GwmsProtocolVersion =!= undefined"
PROJECTION_ROUNDS = 3  # job queries per group per cycle, at most, while Requirements add refs


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SeenEntry:
    """An entry ad accepted this cycle, and the collectors (indexes) it was found in."""

    entry: EntryAd
    ad: classad2.ClassAd
    collectors: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class EntryDecision:
    """What one group decided for one entry this cycle, and why."""

    group: str
    seen: SeenEntry
    match: EntryMatch
    glideins: Glideins
    request: Request
    choice: CredentialChoice

    @property
    def entry(self) -> str:
        return self.seen.name


@dataclass
class CycleReport:
    """What one cycle saw and did; the summary log line is made from it."""

    number: int
    entries: int = 0
    factories: int = 0
    collectors_reached: int = 0
    idle_jobs: int = 0
    running_jobs: int = 0
    decisions: list[EntryDecision] = field(default_factory=list)
    advertised: int = 0
    invalidated: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def requested_idle(self) -> int:
        return sum(d.request.requested_idle for d in self.decisions)


def ad_lifetime(cycle_seconds: int) -> int:
    """Our ads outlive two missed cycles, but never the factory's 15 min request age limit."""
    return min(max(3 * cycle_seconds, 180), 900)


def request_policy(group: Group) -> RequestPolicy:
    """The decision core's per-entry knobs from a group's configuration."""
    per_entry = group.limits.per_entry
    return RequestPolicy(
        max_running=per_entry.max_running,
        max_idle_request=per_entry.max_idle,
        max_idle_glideins=per_entry.max_idle,
        ramp_up_attenuation=group.ramp_up.attenuation,
    )


def group_uses(group: Group, entry: EntryAd) -> bool:
    """Whether ``entry`` is one of the group's ``<factory>/<entry>`` globs."""
    key = f"{entry.factory}/{entry.entry}"
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in group.entries)


def qualify_running_on(rows: JobRows, entries: Iterable[EntryAd]) -> JobRows:
    """Make each running job's entry the entry ad's Name (``entry@factory``).

    Glideins stamp jobs with the bare entry name (and, when set, the factory): with several
    factories, bare names can clash, and matching keys entries by ad Name.
    """
    columns = [c.lower() for c in rows.columns]
    if RUNNING_ON.lower() not in columns:
        return rows
    on_i = columns.index(RUNNING_ON.lower())
    fac_i = columns.index(RUNNING_FACTORY.lower()) if RUNNING_FACTORY.lower() in columns else None
    entries = list(entries)
    names = {e.name for e in entries}
    bare_count: dict[str, int] = {}
    for e in entries:
        bare_count[e.entry] = bare_count.get(e.entry, 0) + 1
    unique = {e.entry: e.name for e in entries if bare_count[e.entry] == 1}

    def fix(row: tuple[Any, ...]) -> tuple[Any, ...]:
        on = row[on_i]
        if on is None or on in names:
            return row
        factory = row[fac_i] if fac_i is not None else None
        name = ad_name(str(on), factory) if isinstance(factory, str) else unique.get(str(on), on)
        return (*row[:on_i], name, *row[on_i + 1 :])

    return JobRows(rows.columns, [fix(r) if r[on_i] is not None else r for r in rows.rows])


class Frontend:
    """One VO frontend: `run_cycle()` once, or `run()` until stopped."""

    def __init__(
        self,
        config: FrontendConfig,
        *,
        collectors: Sequence[Collector] | None = None,
        schedds: Sequence[Schedd] | None = None,
        factory_identities: Mapping[str, str] | None = None,
        identity: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """``factory_identities`` (factory name -> AuthenticatedIdentity) pins entry ads to
        their publisher; ``identity`` is ours, else read back from the collector each cycle.
        """
        self.config = config
        self.collectors = list(collectors) if collectors is not None else _open_collectors(config)
        self.schedds = list(schedds) if schedds is not None else _open_schedds(config)
        self.collector_names = [_collector_name(c) for c in config.collectors]
        self.factory_identities = factory_identities
        self.identity = identity
        self.clock = clock
        self.lifetime = ad_lifetime(config.cycle)
        self.log = get_logger(frontend=config.name)
        self._cycle = 0
        self._projections: dict[str, tuple[str, ...]] = {}
        self._history: dict[str, dict[str, RemovalHistory]] = {}
        self._warned: set[tuple[str, ...]] = set()
        if factory_identities is None:
            self.log.warning(
                "the frontend configuration names no factory identities, so entry ads are taken"
                " from any publisher the collector authenticated; pin each factory to its"
                " AuthenticatedIdentity when the configuration supports it"
            )

    # -- the loop -------------------------------------------------------------------------------

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> int:
        """Cycle until ``stop`` is set (SIGTERM/SIGINT set it); 1 if ``once`` hit errors."""
        stop = stop or threading.Event()
        with stop_on_signals(stop, self.log):
            while True:
                started = time.monotonic()
                report = self._guarded_cycle()
                if once or stop.is_set():
                    break
                stop.wait(max(0.0, self.config.cycle - (time.monotonic() - started)))
                if stop.is_set():
                    break
        self.log.info("stopped after cycle %d", self._cycle)
        return 1 if once and report.errors else 0

    def _guarded_cycle(self) -> CycleReport:
        try:
            return self.run_cycle()
        except Exception as exc:  # a bug must not kill the daemon; the next cycle starts afresh
            self.log.exception("cycle %d failed: %s", self._cycle, exc)
            return CycleReport(self._cycle, errors=[str(exc)])

    def run_cycle(self) -> CycleReport:
        """One cycle: read, decide, advertise; pool failures are logged and reported."""
        started = time.monotonic()
        self._cycle += 1
        now = self.clock()
        report = CycleReport(self._cycle)
        reachable, entries = self._read_entries(report)
        previous = self._previous_requests(reachable, report)
        glideins = self._read_glideins(reachable, entries, report)
        report.collectors_reached = len(reachable)
        report.entries = len(entries)
        report.factories = len({s.entry.factory for s in entries.values()})
        loaded = load_credentials(self.config.credentials)
        for cred in loaded:
            if cred.error:
                self.log.bind(credential=cred.id).warning("%s", cred.error)
        frontend_scope = self._frontend_scope(glideins)
        skipped: set[str] = set()
        for group in self.config.groups:
            if not group.enabled:
                continue
            selected = {n: s for n, s in sorted(entries.items()) if group_uses(group, s.entry)}
            allowed = {c.id for c in self.config.credentials_for(group.name)}
            try:
                decisions = self._decide_group(
                    group,
                    selected,
                    glideins=glideins,
                    credentials=[c for c in loaded if c.id in allowed],
                    previous=previous,
                    frontend_scope=frontend_scope,
                    now=now,
                    report=report,
                )
            except PoolError as exc:
                skipped.add(group.name)
                report.errors.append(str(exc))
                self.log.bind(group=group.name).error(
                    "jobs unreadable, keeping this group's previous requests: %s", exc
                )
                continue
            granted = sum(d.request.requested_idle for d in decisions)
            frontend_scope = replace(
                frontend_scope,
                glideins=frontend_scope.glideins + granted,
                idle=frontend_scope.idle + granted,
            )
            report.decisions += decisions
        self._publish(reachable, report, skipped, now)
        report.seconds = time.monotonic() - started
        self._log_cycle(report)
        return report

    # -- reading ----------------------------------------------------------------------------------

    def _read_entries(self, report: CycleReport) -> tuple[list[int], dict[str, SeenEntry]]:
        reachable: list[int] = []
        found: dict[str, tuple[EntryAd, classad2.ClassAd, list[int]]] = {}
        for index, collector in enumerate(self.collectors):
            try:
                ads = collector.query("glidefactory", OURS)
            except PoolError as exc:
                self._pool_error(report, index, "entry ads unreadable", exc)
                continue
            reachable.append(index)
            for ad in ads:
                entry = self._accept_entry(ad, index)
                if entry is None:
                    continue
                if entry.name in found:
                    found[entry.name][2].append(index)
                else:
                    found[entry.name] = (entry, ad, [index])
        seen = {name: SeenEntry(e, ad, tuple(ix)) for name, (e, ad, ix) in found.items()}
        return reachable, seen

    def _accept_entry(self, ad: classad2.ClassAd, index: int) -> EntryAd | None:
        """The entry an ad describes, if it is from a factory we use and its real publisher."""
        name, factory = ad.get("Name"), ad.get("FactoryName")
        if not isinstance(factory, str) or not self._factory_used(factory):
            return None
        log = self.log.bind(collector=self.collector_names[index], entry=name)
        publisher = ad.get("AuthenticatedIdentity")
        if self.factory_identities is not None:
            expected = self.factory_identities.get(factory)
            if publisher != expected:
                self._warn_once(
                    log,
                    ("identity", str(name), str(publisher)),
                    "ignoring entry ad: published by %s, but factory %s is %s",
                    publisher or "an unauthenticated client",
                    factory,
                    f"configured as {expected}" if expected else "not configured",
                )
                return None
        elif not isinstance(publisher, str) or not publisher:
            self._warn_once(
                log,
                ("unauthenticated", str(name)),
                "ignoring entry ad without AuthenticatedIdentity: the collector did not"
                " authenticate its publisher; require authentication at the collector",
            )
            return None
        try:
            return parse_entry_ad(ad)  # None: a newer protocol version, warned once by the parser
        except ProtocolError as exc:
            self._warn_once(log, ("malformed", str(name), str(exc)), "ignoring entry ad: %s", exc)
            return None

    def _factory_used(self, factory: str) -> bool:
        return any(
            fnmatch.fnmatchcase(factory, pattern.split("/", 1)[0])
            for group in self.config.groups
            if group.enabled
            for pattern in group.entries
        )

    def _previous_requests(self, reachable: list[int], report: CycleReport) -> dict[str, int]:
        """Our request ads of the last cycle (Name -> ReqIdleGlideins): the ramp-up baseline."""
        previous: dict[str, int] = {}
        constraint = f"FrontendName == {quote(self.config.name)} && {OURS}"
        for index in list(reachable):
            try:
                ads = self.collectors[index].query(
                    "glideclient", constraint, projection=["Name", "ReqIdleGlideins"]
                )
            except PoolError as exc:
                reachable.remove(index)
                self._pool_error(report, index, "previous requests unreadable", exc)
                continue
            for ad in ads:
                name, idle = ad.get("Name"), ad.get("ReqIdleGlideins")
                if isinstance(name, str) and isinstance(idle, int) and not isinstance(idle, bool):
                    previous[name] = max(previous.get(name, 0), idle)
        return previous

    def _read_glideins(
        self, reachable: list[int], entries: Mapping[str, SeenEntry], report: CycleReport
    ) -> dict[tuple[str, str], Glideins]:
        """(entry Name, group) -> this frontend's glideins there, from the factories' reports."""
        constraint = f"ReqFrontendName == {quote(self.config.name)} && {OURS}"
        latest: dict[tuple[str, str], tuple[datetime, Glideins]] = {}
        for index in reachable:
            try:
                ads = self.collectors[index].query("glidefactoryclient", constraint)
            except PoolError as exc:
                self._pool_error(report, index, "factory monitoring ads unreadable", exc)
                continue
            for ad in ads:
                try:
                    monitor = parse_factory_client_ad(ad)
                except ProtocolError as exc:
                    log = self.log.bind(collector=self.collector_names[index])
                    self._warn_once(log, ("monitor", str(exc)), "ignoring factory report: %s", exc)
                    continue
                if monitor is None or monitor.frontend != self.config.name:
                    continue
                seen = entries.get(ad_name(monitor.entry, monitor.factory))
                if seen is None or seen.entry.authenticated_identity != (
                    monitor.authenticated_identity
                ):
                    continue  # only reports by the publisher of an entry we use
                key = (seen.name, monitor.group)
                counts = Glideins(
                    total=monitor.idle + monitor.running + monitor.retiring,
                    idle=monitor.idle,
                    running=monitor.running,
                )
                if key not in latest or latest[key][0] < monitor.updated_at:
                    latest[key] = (monitor.updated_at, counts)
        return {key: counts for key, (_, counts) in latest.items()}

    def _frontend_scope(self, glideins: Mapping[tuple[str, str], Glideins]) -> ScopeLimit:
        limits = self.config.limits
        return ScopeLimit(
            "frontend",
            glideins=sum(g.total for g in glideins.values()),
            idle=sum(g.idle for g in glideins.values()),
            max_running=limits.max_running,
            curb_running=limits.curb_running,
            max_idle=limits.max_idle,
            curb_idle=limits.curb_idle,
        )

    # -- deciding ---------------------------------------------------------------------------------

    def _decide_group(
        self,
        group: Group,
        selected: Mapping[str, SeenEntry],
        *,
        glideins: Mapping[tuple[str, str], Glideins],
        credentials: Sequence[Any],
        previous: Mapping[str, int],
        frontend_scope: ScopeLimit,
        now: datetime,
        report: CycleReport,
    ) -> list[EntryDecision]:
        log = self.log.bind(group=group.name)
        if not selected:
            log.info("no entry ad matches the group's entries %s", ", ".join(group.entries))
            return []
        ads = {name: seen.ad for name, seen in selected.items()}
        clusters = self._cluster_jobs(group, ads, selected, now)
        report.idle_jobs += clusters.idle
        report.running_jobs += clusters.running
        matched = match_clusters(clusters, ads, group.match).entries
        choices = {n: choose_credential(s.entry, credentials, now) for n, s in selected.items()}
        counts = {n: glideins.get((n, group.name), Glideins()) for n in selected}
        policy = request_policy(group)
        scope = group_scope(
            group.name,
            counts,
            max_running=group.limits.max_running,
            max_idle=group.limits.max_idle,
        )
        history = self._history.get(group.name, {})
        demands = {
            n: Demand(
                n,
                idle=m.effective_idle_glideins,
                old_idle=m.effective_old_idle_glideins,
                matching_idle_jobs=m.matching_idle,
                running_here=m.running_here,
            )
            for n, m in matched.items()
        }
        downtime = frozenset(n for n, s in selected.items() if s.entry.in_downtime)
        requests = {
            r.entry: r
            for r in compute_group_requests(
                [d for n, d in demands.items() if choices[n].usable],
                counts,
                policy,
                scope,
                (frontend_scope,),
                history=history,
                downtime=downtime,
            )
        }
        for name, demand in demands.items():
            if name not in requests:  # no credential: ask for nothing new, say why
                kept = compute_request(
                    demand,
                    counts[name],
                    policy,
                    (scope, frontend_scope),
                    history=history.get(name),
                    in_downtime=name in downtime,
                )
                requests[name] = replace(
                    kept, requested_idle=0, reasons=choices[name].curb_reasons()
                )
        self._history[group.name] = {n: r.history for n, r in requests.items()}
        decisions = []
        for name, seen in selected.items():
            request = self._ramp_up(
                group, requests[name], previous.get(self._request_name(seen, group), 0)
            )
            decisions.append(
                EntryDecision(group.name, seen, matched[name], counts[name], request, choices[name])
            )
        return decisions

    def _cluster_jobs(
        self,
        group: Group,
        ads: Mapping[str, classad2.ClassAd],
        selected: Mapping[str, SeenEntry],
        now: datetime,
    ) -> ClusterSet:
        """Query only the attributes the match reads; widen once Requirements show more."""
        refs = match_refs(group.match, ads)
        constraint = f"(JobStatus == 1 || JobStatus == 2) && ({group.job_constraint})"
        projection = job_projection(
            refs, extra=(RUNNING_FACTORY, *self._projections.get(group.name, ()))
        )
        entries = [s.entry for s in selected.values()]
        for _ in range(PROJECTION_ROUNDS):
            rows = qualify_running_on(self._query_jobs(constraint, projection), entries)
            clusters = cluster_jobs(rows, refs, now=int(now.timestamp()))
            have = {c.lower() for c in projection}
            missing = sorted(n for n in clusters.missing if n.lower() not in have)
            if not missing:
                break
            projection = job_projection(refs, extra=(*projection, *missing))
        self._projections[group.name] = projection
        return clusters

    def _query_jobs(self, constraint: str, projection: Sequence[str]) -> JobRows:
        rows: list[tuple[Any, ...]] = []
        for schedd in self.schedds:
            rows += JobRows.from_ads(schedd.query(constraint, list(projection)), projection).rows
        return JobRows(tuple(projection), rows)

    def _request_name(self, seen: SeenEntry, group: Group) -> str:
        return ad_name(
            seen.entry.entry, seen.entry.factory, client_name(self.config.name, group.name)
        )

    @staticmethod
    def _ramp_up(group: Group, request: Request, previous: int) -> Request:
        """The idle request rises by at most ``ramp_up.max_new_per_cycle`` per cycle."""
        cap = previous + group.ramp_up.max_new_per_cycle
        if request.requested_idle <= cap:
            return request
        reason = (
            f"group {group.name} ramp_up max_new_per_cycle {group.ramp_up.max_new_per_cycle}"
            f" limited the request to {cap}"
        )
        return replace(request, requested_idle=cap, reasons=(*request.reasons, reason))

    # -- writing ----------------------------------------------------------------------------------

    def _publish(
        self, reachable: list[int], report: CycleReport, skipped: set[str], now: datetime
    ) -> None:
        for index in reachable:
            mine = [d for d in report.decisions if index in d.seen.collectors]
            try:
                self._publish_at(index, mine, skipped, now, report)
            except PoolError as exc:
                self._pool_error(report, index, "advertising failed", exc)

    def _publish_at(
        self,
        index: int,
        decisions: list[EntryDecision],
        skipped: set[str],
        now: datetime,
        report: CycleReport,
    ) -> None:
        collector = self.collectors[index]
        name = self.config.name
        resources = [build_resource_ad(self._resource(d, now)) for d in decisions]
        if resources:
            report.advertised += collector.advertise(resources, self.lifetime)
            identity = self._identity_at(index, resources[0].get("Name"))
            ads = self._credential_ads(decisions, identity, now)
            ads += [self._request_ad(d, identity, now) for d in decisions]
            report.advertised += collector.advertise(ads, self.lifetime)
        requests = [self._request_name(d.seen, self._group(d.group)) for d in decisions]
        factories = sorted({d.seen.entry.factory for d in decisions if d.choice.usable})
        stale = [
            ("glideclient", f"FrontendName == {quote(name)}", "Name", requests, "GroupName"),
            (
                "glideresource",
                f"GlideFrontendName == {quote(name)}",
                "Name",
                requests,
                "GlideGroupName",
            ),
        ]
        if not skipped:  # a skipped group's requests may still name these credentials
            stale.append(
                ("glideclientglobal", f"FrontendName == {quote(name)}", "ReqFactoryName",
                 factories, None)
            )  # fmt: skip
        for ad_type, mine, key, keep, group_attr in stale:
            constraint = f"{mine} && {OURS}" + _not_member(key, keep)
            if group_attr is not None:
                constraint += _not_member(group_attr, sorted(skipped))
            report.invalidated += collector.invalidate(ad_type, constraint)

    def _identity_at(self, index: int, resource_name: str) -> str:
        """Who the collector says we are: factories accept only requests sealed with it."""
        if self.identity is not None:
            return self.identity
        ads = self.collectors[index].query(
            "glideresource", f"Name == {quote(resource_name)}", projection=["AuthenticatedIdentity"]
        )
        identity = ads[0].get("AuthenticatedIdentity") if ads else None
        if not isinstance(identity, str) or not identity:
            raise PoolError(
                f"collector {self.collector_names[index]} did not stamp AuthenticatedIdentity on"
                " our ads, and factories refuse requests from unauthenticated publishers; give"
                " the frontend a token (embedded) or an authenticated connection (htcondor)"
            )
        return identity

    def _credential_ads(
        self, decisions: list[EntryDecision], identity: str, now: datetime
    ) -> list[classad2.ClassAd]:
        """One ad per factory with every credential chosen for its entries, sealed to its key."""
        by_factory: dict[str, list[EntryDecision]] = {}
        for d in sorted(decisions, key=lambda d: d.entry):
            if d.choice.credential is not None:
                by_factory.setdefault(d.seen.entry.factory, []).append(d)
        ads = []
        for factory, chosen in by_factory.items():
            creds = {c.id: c for d in chosen for c in d.choice.credentials}
            ads.append(
                build_credential_ad(
                    make_credential_ad(
                        factory=factory,
                        # Entries of one factory publish its one current key (the first entry
                        # by name decides during a rotation; the old key opens during the grace).
                        public_key_pem=chosen[0].seen.entry.public_key_pem,
                        frontend=self.config.name,
                        identity=identity,
                        credentials=list(creds.values()),
                        now=now,
                    )
                )
            )
        return ads

    def _request_ad(self, d: EntryDecision, identity: str, now: datetime) -> classad2.ClassAd:
        return build_request_ad(
            make_request(
                d.seen.entry,
                frontend=self.config.name,
                group=d.group,
                identity=identity,
                idle=d.request.requested_idle,
                max_running=d.request.max_running,
                now=now,
                remove_excess=RemoveExcess[d.request.remove_excess.name],
                credential_ids=d.choice.credential_ids,
            )
        )

    def _resource(self, d: EntryDecision, now: datetime) -> ResourceAd:
        return ResourceAd(
            factory=d.seen.entry.factory,
            entry=d.seen.entry.entry,
            frontend=self.config.name,
            group=d.group,
            matching_idle=d.match.matching_idle,
            effective_idle=round(d.match.effective_idle, 6),
            matching_running=d.match.matching_running,
            running_here=d.match.running_here,
            requested_idle=d.request.requested_idle,
            requested_max_running=d.request.max_running,
            curb_reasons=d.request.reasons,
            updated_at=now,
        )

    def _group(self, name: str) -> Group:
        return next(g for g in self.config.groups if g.name == name)

    # -- logging ----------------------------------------------------------------------------------

    def _log_cycle(self, report: CycleReport) -> None:
        for d in report.decisions:
            log = self.log.bind(group=d.group, entry=d.entry)
            if not d.choice.usable:
                for reason in d.choice.curb_reasons():
                    log.warning("%s", reason)
            r, m, g = d.request, d.match, d.glideins
            credential = d.choice.credential.id if d.choice.credential else "none"
            curbed = f"; curbed: {'; '.join(r.reasons)}" if r.reasons else ""
            log.info(
                "idle jobs %d (effective %.2f, %d glideins), running jobs %d (%d here);"
                " glideins %d (%d idle); requested idle %d, max running %d, remove %s;"
                " credential %s%s",
                m.matching_idle,
                m.effective_idle,
                m.effective_idle_glideins,
                m.matching_running,
                m.running_here,
                g.total,
                g.idle,
                r.requested_idle,
                r.max_running,
                r.remove_excess.name,
                credential,
                curbed,
            )
        log = self.log.bind(cycle=report.number)
        (log.warning if report.errors else log.info)(
            "cycle done in %.2f s: %d entries of %d factories from %d/%d collectors;"
            " %d idle and %d running jobs; %d requests asking %d idle glideins;"
            " %d ads advertised, %d stale ads invalidated; %d errors",
            report.seconds,
            report.entries,
            report.factories,
            report.collectors_reached,
            len(self.collectors),
            report.idle_jobs,
            report.running_jobs,
            len(report.decisions),
            report.requested_idle,
            report.advertised,
            report.invalidated,
            len(report.errors),
        )

    def _pool_error(self, report: CycleReport, index: int, what: str, exc: Exception) -> None:
        report.errors.append(f"{what}: {exc}")
        self.log.bind(collector=self.collector_names[index]).error("%s: %s", what, exc)

    def _warn_once(self, log: BoundLogger, key: tuple[str, ...], msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)


def _not_member(attr: str, values: Sequence[str]) -> str:
    if not values:
        return ""
    return f" && !member({attr}, {{{', '.join(quote(v) for v in values)}}})"


def _collector_name(ref: Any) -> str:
    return str(getattr(ref, "url", None) or getattr(ref, "address", "?"))


def _open_collectors(config: FrontendConfig) -> list[Collector]:
    return [open_collector(pool_mapping(ref)) for ref in config.collectors]


def _open_schedds(config: FrontendConfig) -> list[Schedd]:
    result = []
    for ref in config.schedds:
        mapping = pool_mapping(ref)
        if ref.backend == "htcondor":
            mapping["schedd_name"] = ref.name
        result.append(open_schedd(mapping))
    return result
