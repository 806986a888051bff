"""The factory cycle: publish entries, read and verify requests, reconcile, decide, act, report.

One cycle (DESIGN.md §1, §5):
1. publish one entry ad per entry, with the key ring's current public key;
2. read the request and credential ads addressed to this factory and verify them; a
   rejected ad (unauthenticated, unknown, tampered, stale, replayed, not allowed) is
   logged with its reason code and ignored;
3. reconcile the journal with one listing per provider (`reconcile`);
4. decide (`decisions.decide`, pure) and act: retire, terminate (zombies counted),
   launch each batch as derive proxy -> build UserData -> journal -> cloud call -> journal;
5. publish one `glidefactoryclient` monitoring ad per entry x client.
Between 3 and 4, the VMs' own status reports (stored by the web service) are read: a
glidein whose pilot reported it started counts as running, one whose pilot finished or
never started is terminated (`status_transitions`). After each cycle the Prometheus
metrics shared with the web service are updated (glideins, cloud calls, errors).

Fault points: the launch sequence calls `fault(name)` at each step boundary
(`FAULT_POINTS`); the default hook exits the process with `FAULT_EXIT` when the
environment variable GWMS_FAULT_POINT names that point, so crash tests can kill a real
factory exactly there. Tests in-process pass a hook that raises instead.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import classad2

from gwms.config.factory import Entry, FactoryConfig, LatestImage
from gwms.credentials.keys import FactoryKeyring
from gwms.credentials.model import (
    AnyCredential,
    IdTokenCredential,
    X509ProxyCredential,
    matches_trust_domain,
)
from gwms.daemons import pool_mapping, quiet_cloud_libraries, stop_on_signals
from gwms.factory import upload_tokens
from gwms.factory.decisions import (
    ClientRequest,
    Decision,
    EntryPolicy,
    LaunchPlan,
    PendingBatch,
    Policy,
    Termination,
    after_terminate,
    decide,
)
from gwms.factory.journal import (
    BatchState,
    GlideinRecord,
    GlideinState,
    GlideinUpdate,
    Journal,
    NewGlidein,
    epoch,
)
from gwms.factory.metrics import FactoryMetrics
from gwms.factory.providers.base import LaunchRequest, Provider, ProviderError
from gwms.factory.reconcile import ReconcileReport, new_glideins, reconcile
from gwms.factory.userdata_builder import LaunchRefused, build_batch_userdata
from gwms.pool.base import Collector, PoolError
from gwms.protocol import (
    AuthorisedFrontend,
    EntryAd,
    EntryLifetimes,
    EntryLimits,
    FactoryClientAd,
    OpenedCredentials,
    RequestRejected,
    VerifiedRequest,
    build_entry_ad,
    build_factory_client_ad,
    open_credential_ad,
    verify_request,
)
from gwms.protocol.monitoring import one_line
from gwms.protocol.wire import AdKind

log = logging.getLogger("gwms.factory")

FAULT_ENV = "GWMS_FAULT_POINT"
FAULT_EXIT = 86
FAULT_POINTS = ("before_journal", "after_journal", "after_call", "after_record")
FaultHook = Callable[[str], None]
ProviderBuilder = Callable[..., Provider]

# Cloud types whose from_frontend credentials come as these credential types.
_CLOUD_CREDENTIAL_TYPES = {
    "ec2": ("aws_key_pair", "aws_role"),
    "openstack": ("openstack_app_credential",),
}


def env_fault_hook(point: str) -> None:
    """Exit at `point` when GWMS_FAULT_POINT names it (crash tests of a real process)."""
    if os.environ.get(FAULT_ENV) == point:
        log.warning("fault point %s reached: exiting with %d as asked", point, FAULT_EXIT)
        logging.shutdown()
        os._exit(FAULT_EXIT)


class ProviderPool:
    """One provider per cloud, or per (cloud, frontend credential) for from_frontend clouds."""

    def __init__(
        self, config: FactoryConfig, build: ProviderBuilder | None = None, **overrides: Any
    ) -> None:
        if build is None:
            from gwms.factory.providers.registry import build_provider

            build = build_provider
        self._config = config
        self._build = build
        self._overrides = overrides
        self._providers: dict[str, Provider] = {}

    def _needs_frontend(self, cloud_name: str) -> bool:
        creds = getattr(self._config.cloud(cloud_name), "credentials", None)
        return creds is not None and creds.type == "from_frontend"

    def for_launch(
        self, cloud_name: str, frontend: str, credential: AnyCredential | None
    ) -> tuple[str, Provider]:
        """The provider key journaled with the batch, and the provider."""
        if not self._needs_frontend(cloud_name):
            key = cloud_name
        elif credential is None:
            raise LaunchRefused(
                f"cloud {cloud_name} takes its credentials from the frontend, but frontend"
                f" {frontend} sent none for it; add one to the group's credentials"
            )
        else:
            key = f"{cloud_name}/{frontend}/{credential.id}"
        if key not in self._providers:
            cloud = self._config.cloud(cloud_name)
            self._providers[key] = self._build(
                cloud, factory=self._config.name, credential=credential, **self._overrides
            )
        return key, self._providers[key]

    def get(self, key: str) -> Provider | None:
        """The provider for a journaled key; static clouds are built on demand."""
        if key not in self._providers and "/" not in key:
            try:
                self.for_launch(key, "", None)
            except (ProviderError, StopIteration) as exc:
                log.warning("provider %s unavailable: %s", key, exc)
                return None
        return self._providers.get(key)

    def built(self) -> dict[str, Provider]:
        """Every provider built so far, by key (for metrics)."""
        return dict(self._providers)

    def listable(self, keys: Sequence[str]) -> dict[str, Provider]:
        """Providers to list this cycle: every static cloud in use, and known frontend ones."""
        wanted = {e.cloud for e in self._config.entries if not self._needs_frontend(e.cloud)}
        found = {}
        for key in sorted(wanted | set(keys) | set(self._providers)):
            provider = self.get(key)
            if provider is not None:
                found[key] = provider
        return found


@dataclass
class CycleReport:
    """What one cycle did (for logs, tests and the benchmark)."""

    entries_published: int = 0
    requests_accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    reconcile: ReconcileReport | None = None
    launched: list[str] = field(default_factory=list)  # batch ids
    launch_errors: list[str] = field(default_factory=list)
    terminated: int = 0
    zombies: int = 0
    pilots_started: int = 0  # glideins promoted to running by their status report
    finished: int = 0  # glideins terminated because their pilot reported its end
    decision: Decision | None = None


def entry_policy(entry: Entry) -> EntryPolicy:
    limits = entry.limits
    return EntryPolicy(
        name=entry.name,
        enabled=entry.enabled,
        max_running=limits.max_running,
        max_idle=limits.max_idle,
        max_per_frontend=limits.max_per_frontend,
        max_launches_per_cycle=limits.max_launches_per_cycle,
        max_lifetime=entry.lifetimes.max,
        retire_after=entry.lifetimes.retire,
    )


def resolve_image(entry: Entry, region: str | None = None) -> str:
    """The image id: given, or the newest build of `latest` in `region` of the image manifest."""
    if not isinstance(entry.image, LatestImage):
        return entry.image
    from gwms.images.manifest import ManifestError, latest_image

    try:
        return latest_image(str(entry.image.manifest), entry.image.latest, region)
    except ManifestError as exc:
        raise LaunchRefused(f"entry {entry.name}: {exc}") from None


def cloud_region(cloud: object) -> str | None:
    """The region an entry's images must come from: the cloud's own, `local` for local VMs."""
    if getattr(cloud, "type", None) == "local":
        return "local"
    return getattr(cloud, "region", None)


class FactoryDaemon:
    """The factory's cycle over one configuration, collector, key ring and journal."""

    def __init__(
        self,
        config: FactoryConfig,
        *,
        collector: Collector,
        keyring: FactoryKeyring,
        journal: Journal,
        providers: ProviderPool | None = None,
        policy: Policy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        fault: FaultHook = env_fault_hook,
        upload_secret: bytes | None = None,
        pilot_files: Mapping[str, str] | None = None,
        metrics: FactoryMetrics | None = None,
        status_dir: Path | None = None,
    ) -> None:
        """`status_dir` holds the VMs' status reports (default: the web's upload_dir)."""
        self.config = config
        self.collector = collector
        self.keyring = keyring
        self.journal = journal
        self.providers = providers or ProviderPool(config)
        self.policy = policy or Policy()
        self.clock = clock
        self.fault = fault
        self.upload_secret = upload_secret or upload_tokens.load_secret(Path(config.state_dir))
        self._pilot_files = pilot_files
        self.entries = {e.name: e for e in config.entries}
        self.authorised = {
            f.name: AuthorisedFrontend(identity=f.identity, entries=tuple(f.entries))
            for f in config.frontends
        }
        self._last_error: dict[tuple[str, str], tuple[str, datetime]] = {}
        self._new_zombies: list[tuple[str, str]] = []
        self.started = False
        self.metrics = metrics if metrics is not None else FactoryMetrics()
        self.metrics.set_entries(
            sum(e.enabled for e in config.entries), sum(not e.enabled for e in config.entries)
        )
        upload_dir = config.web.upload_dir
        self.status_dir = status_dir or (Path(str(upload_dir)) if upload_dir else None)
        self._status_cache: dict[str, tuple[int, int, dict[str, Any] | None]] = {}
        self._calls_seen: dict[tuple[str, str, str], int] = {}

    # --- the loop ------------------------------------------------------------------------

    def start(self) -> ReconcileReport:
        """Reconcile before the first cycle: settle launches a crash left unknown."""
        self.started = True
        return self._reconcile(epoch(self.clock()))

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Cycle every `config.cycle` seconds until `stop` is set (or once)."""
        if not self.started:
            self.start()
        while not stop.is_set():
            try:
                self.cycle()
            except (PoolError, ProviderError) as exc:
                self.metrics.error("cycle_failed")
                self._count_cloud_calls()
                log.error("cycle failed: %s; trying again next cycle", exc)
            if once:
                return
            stop.wait(self.config.cycle)

    def cycle(self) -> CycleReport:
        """One factory cycle; see the module docstring."""
        if not self.started:
            self.start()
        report = CycleReport()
        now_dt = self.clock()
        now = epoch(now_dt)
        report.entries_published = self._publish_entries()
        requests, credentials = self._read_requests(now_dt, report)
        report.reconcile = self._reconcile(now)
        finished = self._read_status_reports(now, report)
        decision = self._decide(requests, now)
        report.decision = decision
        self._apply_transitions(decision, now)
        self._new_zombies: list[tuple[str, str]] = []
        self._terminate(
            _unique(decision.terminations + report.reconcile.broken + finished), now, report
        )
        for key in self._new_zombies:  # the monitoring ad shows them this cycle
            if key in decision.status:
                decision.status[key].zombie += 1
        for plan in decision.launches:
            self._launch(plan, requests[(plan.entry, plan.client)], credentials, now_dt, report)
        self._publish_monitoring(decision, requests, now_dt)
        self._update_metrics(report)
        return report

    # --- what the VMs say about themselves ---------------------------------------------------

    def _read_status_reports(self, now: int, report: CycleReport) -> list[Termination]:
        """Promote glideins whose pilot started; terminations for those whose pilot ended."""
        if self.status_dir is None:
            return []
        alive = self.journal.glideins(
            (GlideinState.LAUNCHING, GlideinState.RUNNING, GlideinState.RETIRING)
        )
        updates: list[GlideinUpdate] = []
        finished: list[Termination] = []
        for record in alive:
            status = self._latest_status(record)
            if status is None:
                continue
            state, reason = status_transition(record, status, now)
            if state is GlideinState.RUNNING:
                updates.append(GlideinUpdate(record.glidein_id, state=state))
                report.pilots_started += 1
            elif reason is not None:
                finished.append(
                    Termination(record.glidein_id, record.cloud_id, record.provider_key, reason)
                )
                report.finished += 1
        self.journal.update(updates, now)
        live_ids = {record.glidein_id for record in alive}
        for gone in set(self._status_cache) - live_ids:
            del self._status_cache[gone]
        return finished

    def _latest_status(self, record: GlideinRecord) -> dict[str, Any] | None:
        """The glidein's last status report, re-read only when its file changed."""
        from gwms.factory.web import STATUS_FILE, latest_status

        assert self.status_dir is not None
        directory = self.status_dir / record.entry / record.client / record.glidein_id
        try:
            stat = (directory / STATUS_FILE).stat()
        except FileNotFoundError:
            return None
        except OSError:
            self.metrics.error("status_unreadable")
            return None
        cached = self._status_cache.get(record.glidein_id)
        if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2]
        status = latest_status(self.status_dir, record.entry, record.client, record.glidein_id)
        self._status_cache[record.glidein_id] = (stat.st_mtime_ns, stat.st_size, status)
        return status

    # --- metrics -----------------------------------------------------------------------------

    def _update_metrics(self, report: CycleReport) -> None:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for record in self.journal.glideins():
            counts[(record.entry, record.state.value)] += 1
        self.metrics.set_glideins(counts)
        self._count_cloud_calls()
        errors = {
            "request_rejected": sum(report.rejected.values()),
            "launch_failed": len(report.launch_errors),
            "listing_failed": len(report.reconcile.unlisted) if report.reconcile else 0,
            "zombie": report.zombies,
        }
        for kind, count in errors.items():
            if count:
                self.metrics.errors.labels(kind).inc(count)

    def _count_cloud_calls(self) -> None:
        """Add each provider's requests since the last look to the cloud-call counter.

        A request followed by a retry failed (throttled or a server error): `error`; the
        others are `ok` (a last try that failed for good is among them: providers count
        requests, not outcomes).
        """
        for key, provider in self.providers.built().items():
            cloud = key.split("/", 1)[0]
            calls = getattr(provider, "calls", None) or {}
            retrier = getattr(provider, "retrier", None)
            retries = getattr(retrier, "retries", None) or {}
            for api in set(calls) | set(retries):
                made, failed = int(calls.get(api, 0)), int(retries.get(api, 0))
                for outcome, total in (("error", failed), ("ok", made - failed)):
                    seen_key = (key, api, outcome)
                    delta = total - self._calls_seen.get(seen_key, 0)
                    if delta > 0:
                        self.metrics.cloud_calls.labels(cloud, api, outcome).inc(delta)
                        self._calls_seen[seen_key] = total

    # --- ads in ------------------------------------------------------------------------------

    def _publish_entries(self) -> int:
        ads = []
        key_pem = self.keyring.public_key_pem()
        kid = self.keyring.current_key_id
        algorithm = next(k.algorithm for k in self.keyring.keys if k.id == kid)
        for entry in self.config.entries:
            try:
                image = resolve_image(entry, cloud_region(self.config.cloud(entry.cloud)))
            except LaunchRefused as exc:
                log.error("entry=%s: not published: %s", entry.name, exc)
                continue
            limits = entry.limits
            ad = EntryAd(
                factory=self.config.name,
                entry=entry.name,
                trust_domain=entry.trust_domain,
                auth_methods=tuple(entry.auth_methods),
                image_id=image,
                instance_types=tuple(entry.instance_types),
                limits=EntryLimits(
                    max_running=limits.max_running,
                    max_idle=limits.max_idle,
                    max_per_frontend=limits.max_per_frontend,
                    max_launches_per_cycle=limits.max_launches_per_cycle,
                ),
                lifetimes=EntryLifetimes(
                    max_seconds=entry.lifetimes.max,
                    retire_seconds=entry.lifetimes.retire,
                    idle_shutdown_seconds=entry.lifetimes.idle_shutdown,
                ),
                attributes=dict(entry.attributes),
                start=entry.start,
                in_downtime=not entry.enabled,
                allow_privileged_overlays=entry.allow_privileged_overlays,
                key_id=kid,
                key_algorithm=algorithm,
                public_key_pem=key_pem,
            )
            ads.append(build_entry_ad(ad))
        if ads:
            self.collector.advertise(ads, lifetime=self._ad_lifetime)
        return len(ads)

    @property
    def _ad_lifetime(self) -> int:
        return 3 * self.config.cycle + 60

    def _read_requests(
        self, now: datetime, report: CycleReport
    ) -> tuple[dict[tuple[str, str], VerifiedRequest], dict[str, OpenedCredentials]]:
        """Verified requests by (entry, client) and opened credentials by frontend."""
        mine = f"ReqFactoryName == {json.dumps(self.config.name)}"
        rejected: dict[str, int] = defaultdict(int)
        credentials: dict[str, OpenedCredentials] = {}
        for ad in self.collector.query(AdKind.CREDENTIALS.value, mine):
            try:
                opened = open_credential_ad(
                    ad, self.keyring, self.config.name, self.authorised, now
                )
            except RequestRejected as exc:
                rejected[exc.reason] += 1
                log.warning("credential ad rejected (%s): %s", exc.reason, exc)
                continue
            credentials[opened.frontend] = opened
        requests: dict[tuple[str, str], VerifiedRequest] = {}
        for ad in self.collector.query(AdKind.REQUEST.value, mine):
            try:
                verified = verify_request(ad, self.keyring, self.config.name, self.authorised, now)
            except RequestRejected as exc:
                rejected[exc.reason] += 1
                log.warning("request rejected (%s): %s", exc.reason, exc)
                continue
            req = verified.request
            if req.entry not in self.entries:
                rejected["unknown_entry"] += 1
                log.warning("request rejected (unknown_entry): %s asks for entry %s, which this"
                            " factory does not have", req.name, req.entry)  # fmt: skip
                continue
            key = (req.entry, req.client_name)
            old = requests.get(key)
            if old is None or old.request.issued_at < req.issued_at:
                requests[key] = verified
        report.rejected = dict(rejected)
        report.requests_accepted = len(requests)
        return requests, credentials

    # --- reconcile and decide ----------------------------------------------------------------

    def _reconcile(self, now: int) -> ReconcileReport:
        keys = {b.provider_key for b in self.journal.batches(BatchState.LAUNCHING)}
        keys |= {g.provider_key for g in self.journal.glideins()}
        return reconcile(
            self.journal,
            self.providers.listable(sorted(keys)),
            factory=self.config.name,
            now=now,
            policy=self.policy,
            provider_for=self.providers.get,
        )

    def _decide(self, requests: Mapping[tuple[str, str], VerifiedRequest], now: int) -> Decision:
        client_requests = [
            ClientRequest(
                entry=v.request.entry,
                client=v.request.client_name,
                frontend=v.request.frontend,
                idle=v.request.idle,
                max_running=v.request.max_running,
                remove_excess=v.request.remove_excess,
                issued_at=epoch(v.request.issued_at),
            )
            for v in requests.values()
        ]
        pending = [
            PendingBatch(b.batch_id, b.entry, b.client, b.frontend, b.count)
            for b in self.journal.batches(BatchState.LAUNCHING)
        ]
        return decide(
            client_requests,
            self.journal.glideins(),
            pending=pending,
            entries={name: entry_policy(e) for name, e in self.entries.items()},
            frontend_max={f.name: f.max_glideins for f in self.config.frontends},
            now=now,
            policy=self.policy,
        )

    # --- act -------------------------------------------------------------------------------

    def _apply_transitions(self, decision: Decision, now: int) -> None:
        self.journal.update(
            [GlideinUpdate(t.glidein_id, state=t.state) for t in decision.transitions], now
        )

    def _terminate(
        self, terminations: Sequence[Termination], now: int, report: CycleReport
    ) -> None:
        by_key: dict[str, list[Termination]] = defaultdict(list)
        for t in terminations:
            by_key[t.provider_key].append(t)
        updates = []
        for key, batch in by_key.items():
            provider = self.providers.get(key)
            if provider is None:
                continue
            try:
                result = provider.terminate([t.cloud_id for t in batch])
                accepted, failed = set(result.accepted), dict(result.failed)
            except ProviderError as exc:
                accepted, failed = set(), {t.cloud_id: str(exc) for t in batch}
            for t in batch:
                record = self.journal.glidein(t.glidein_id)
                if record is None:
                    continue
                ok = t.cloud_id in accepted
                state, attempts, next_at = after_terminate(record, ok, now, self.policy)
                error = None if ok else one_line(failed.get(t.cloud_id, "not accepted"), 500)
                bound = f"entry={record.entry} client={record.client} glidein={t.glidein_id}"
                if ok:
                    log.info("%s: terminating VM %s (%s)", bound, t.cloud_id, t.reason)
                    report.terminated += 1
                else:
                    log.warning("%s: VM %s refused to terminate (%s): %s; attempt %d",
                                bound, t.cloud_id, t.reason, error, attempts)  # fmt: skip
                if state is GlideinState.ZOMBIE:
                    report.zombies += 1
                    if record.state is not GlideinState.ZOMBIE:
                        self._new_zombies.append((record.entry, record.client))
                        log.error("%s: VM %s is a zombie after %d refused terminations; not"
                                  " counted as capacity, retried with backoff",
                                  bound, t.cloud_id, attempts)  # fmt: skip
                updates.append(
                    GlideinUpdate(
                        t.glidein_id,
                        state=state,
                        terminate_attempts=attempts,
                        next_terminate_at=next_at,
                        last_error=error,
                    )
                )
        self.journal.update(updates, now)

    def _launch(
        self,
        plan: LaunchPlan,
        verified: VerifiedRequest,
        credentials: Mapping[str, OpenedCredentials],
        now_dt: datetime,
        report: CycleReport,
    ) -> None:
        bound = f"entry={plan.entry} client={plan.client}"
        try:
            self._launch_batch(plan, verified, credentials, now_dt, report)
        except (LaunchRefused, ProviderError) as exc:
            report.launch_errors.append(str(exc))
            self._last_error[(plan.entry, plan.client)] = (str(exc), now_dt)
            log.error("%s: launch of %d VMs failed: %s", bound, plan.count, exc)

    def _launch_batch(
        self,
        plan: LaunchPlan,
        verified: VerifiedRequest,
        credentials: Mapping[str, OpenedCredentials],
        now_dt: datetime,
        report: CycleReport,
    ) -> None:
        now = epoch(now_dt)
        entry = self.entries[plan.entry]
        cloud = self.config.cloud(entry.cloud)
        proxy, idtoken, cloud_cred = self._pick_credentials(entry, verified, credentials)
        key, provider = self.providers.for_launch(cloud.name, plan.frontend, cloud_cred)
        image = resolve_image(entry, cloud_region(cloud))
        batch_id = self.journal.next_batch_id(now)
        built = build_batch_userdata(
            factory=self.config.name,
            entry=entry,
            cloud_type=cloud.type,
            client=plan.client,
            batch_id=batch_id,
            web_base=str(self.config.web.base_url),
            files=self.pilot_files(),
            upload_secret=self.upload_secret,
            proxy=proxy,
            idtoken=idtoken,
            now=now_dt,
        )
        bound = f"entry={plan.entry} client={plan.client} batch={batch_id}"
        if built.proxy_clamped:
            log.warning("%s: the delegated proxy ends before max lifetime + margin; the glidein"
                        " proxy ends %s", bound, built.proxy_not_after)  # fmt: skip
        self.fault("before_journal")
        batch = self.journal.new_batch(
            batch_id=batch_id,
            entry=plan.entry,
            client=plan.client,
            frontend=plan.frontend,
            cloud=cloud.name,
            provider_key=key,
            count=plan.count,
            now=now,
        )
        self.fault("after_journal")
        from gwms.factory.providers.registry import entry_options

        request = LaunchRequest(
            batch_id=batch_id,
            count=plan.count,
            entry=plan.entry,
            client=plan.client,
            image=image,
            instance_type=entry.instance_types[0],
            userdata=built.userdata,
            client_token=batch.client_token,
            options=entry_options(entry),
        )
        try:
            instances = provider.launch(request)
        except ProviderError as exc:
            # The outcome may be unknown: the batch stays `launching` (counted as idle) until
            # a tag lookup settles it; never relaunched blindly.
            log.error("%s: launch call failed (%s); the batch is settled by tag lookup", bound, exc)
            report.launch_errors.append(str(exc))
            self._last_error[(plan.entry, plan.client)] = (str(exc), now_dt)
            return
        self.fault("after_call")
        rows = [g if g.launched_at else _at(g, now) for g in new_glideins(instances)]
        self.journal.record_launch(batch_id, rows, now)
        self.fault("after_record")
        report.launched.append(batch_id)
        log.info("%s: launched %d of %d VMs (image %s, proxy until %s)", bound, len(instances),
                 plan.count, image, built.proxy_not_after.isoformat())  # fmt: skip

    def _pick_credentials(
        self,
        entry: Entry,
        verified: VerifiedRequest,
        credentials: Mapping[str, OpenedCredentials],
    ) -> tuple[X509ProxyCredential, IdTokenCredential | None, AnyCredential | None]:
        """The request's proxy (required), idtoken and cloud credential for this entry."""
        request = verified.request
        opened = credentials.get(request.frontend)
        if opened is None or opened.identity != verified.identity:
            raise LaunchRefused(
                f"entry {entry.name}: no valid credential ad from frontend {request.frontend};"
                " the frontend must publish its sealed credentials for this factory"
            )
        wanted = [opened.credentials[c] for c in request.credential_ids if c in opened.credentials]
        usable = [c for c in wanted if matches_trust_domain(c, entry.trust_domain)]
        proxy = next((c for c in usable if isinstance(c, X509ProxyCredential)), None)
        if proxy is None or "x509_proxy" not in entry.auth_methods:
            raise LaunchRefused(
                f"entry {entry.name}: request {request.name} names no x509 proxy of trust domain"
                f" {entry.trust_domain} (entry auth methods: {', '.join(entry.auth_methods)});"
                " the frontend group must delegate one"
            )
        idtoken = next((c for c in usable if isinstance(c, IdTokenCredential)), None)
        cloud_type = self.config.cloud(entry.cloud).type
        types = _CLOUD_CREDENTIAL_TYPES.get(cloud_type, ())
        cloud_cred = next((c for c in usable if c.type in types), None)
        return proxy, idtoken, cloud_cred

    def pilot_files(self) -> Mapping[str, str]:
        """The web area's manifest (name -> sha256), installed on first use."""
        if self._pilot_files is None:
            from gwms.factory.webarea import install_web_area, read_manifest

            web_dir = Path(str(self.config.web.web_dir))
            if not (web_dir / "manifest.json").exists():
                install_web_area(web_dir)
            self._pilot_files = read_manifest(web_dir)
        return self._pilot_files

    # --- ads out -----------------------------------------------------------------------------

    def _publish_monitoring(
        self,
        decision: Decision,
        requests: Mapping[tuple[str, str], VerifiedRequest],
        now: datetime,
    ) -> None:
        ads: list[classad2.ClassAd] = []
        for (entry, client), status in sorted(decision.status.items()):
            frontend, _, group = client.partition(".")
            verified = requests.get((entry, client))
            error = self._last_error.get((entry, client))
            ads.append(
                build_factory_client_ad(
                    FactoryClientAd(
                        factory=self.config.name,
                        entry=entry,
                        frontend=frontend,
                        group=group,
                        idle=status.idle,
                        running=status.running,
                        retiring=status.retiring,
                        zombie=status.zombie,
                        requested_idle=verified.request.idle if verified else 0,
                        requested_max_running=verified.request.max_running if verified else 0,
                        request_issued_at=verified.request.issued_at if verified else None,
                        effective_idle=status.effective_idle,
                        effective_max_running=status.effective_max_running,
                        limits_applied=tuple(status.limits_applied),
                        last_error=one_line(error[0]) if error else None,
                        last_error_at=error[1] if error else None,
                        updated_at=now,
                    )
                )
            )
        if ads:
            self.collector.advertise(ads, lifetime=self._ad_lifetime)


# Status report stages (gwms-bootstrap run): the pilot runs, or the glidein is over.
STARTED_STAGES = frozenset({"pilot_started"})
FINAL_STAGES = frozenset({"shutdown", "terminated"})  # the VM is going down by itself
ENDED_STAGES = frozenset({"pilot_exited", "failed"})  # logs and power-off still to come
FINISH_GRACE = 120  # seconds a VM whose pilot ended has to ship its logs and power off
FINISH_REASONS = {  # the termination reason logged for each final stage
    "shutdown": "vm_shutdown",
    "terminated": "vm_terminated",
    "pilot_exited": "pilot_exited",
    "failed": "glidein_failed",
}


def status_transition(
    record: GlideinRecord, status: Mapping[str, Any], now: int
) -> tuple[GlideinState | None, str | None]:
    """(new state, termination reason) a glidein's last status report implies; pure.

    `pilot_started` makes a launching glidein running. `shutdown`/`terminated` end it now;
    `pilot_exited`/`failed` end it once the VM had FINISH_GRACE s to ship logs and power
    off by itself (a VM that cannot power off, or will not, is not left running).
    """
    stage = str(status.get("stage") or "")
    if stage in STARTED_STAGES:
        if record.state is GlideinState.LAUNCHING:
            return GlideinState.RUNNING, None
        return None, None
    received = status.get("received_at")
    at = int(received) if isinstance(received, int) else now
    if stage in FINAL_STAGES or (stage in ENDED_STAGES and now - at >= FINISH_GRACE):
        return None, FINISH_REASONS[stage]
    return None, None


def _unique(terminations: Sequence[Termination]) -> list[Termination]:
    """One termination per glidein (the first reason given wins)."""
    seen: set[str] = set()
    found = []
    for t in terminations:
        if t.glidein_id not in seen:
            seen.add(t.glidein_id)
            found.append(t)
    return found


def _at(glidein: NewGlidein, launched_at: int) -> NewGlidein:
    return NewGlidein(
        glidein.batch_id, glidein.launch_index, glidein.cloud_id, glidein.state, launched_at
    )


def open_factory_collector(config: FactoryConfig) -> Collector:
    from gwms.pool import open_collector

    return open_collector(pool_mapping(config.collector))


def open_keyring(directory: Path) -> FactoryKeyring:
    """The factory's key ring; made on first start so entries can be published at once."""
    if not (directory / "keys.json").exists():
        log.info("no key ring in %s: generating the factory key", directory)
        return FactoryKeyring.generate(directory)
    return FactoryKeyring.load(directory)


def run_factory(config_path: Path, *, once: bool = False, web: bool = True) -> int:
    """`gwms factory run`: load, open everything, cycle until stopped; returns the exit code."""
    from gwms.config import load_factory_config

    config = load_factory_config(config_path)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    quiet_cloud_libraries()
    state_dir = Path(config.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    keyring = open_keyring(Path(str(config.keys.dir)))
    collector = open_factory_collector(config)
    server = None
    metrics = FactoryMetrics()
    with Journal.in_state_dir(state_dir) as journal:
        daemon = FactoryDaemon(
            config, collector=collector, keyring=keyring, journal=journal, metrics=metrics
        )
        if web and not once:
            from gwms.factory.web import serve
            from gwms.factory.webarea import WebArea

            daemon.pilot_files()  # installs the web area if it has none yet
            server = serve(
                WebArea(Path(str(config.web.web_dir))),
                Path(str(config.web.upload_dir)),
                daemon.upload_secret,
                listen=config.web.listen,
                max_upload_size=config.web.max_upload_size,
                metrics=metrics,
            )
        stop = threading.Event()
        try:
            with stop_on_signals(stop, log):
                daemon.run(stop, once=once)
        finally:
            if server is not None:
                server.stop()
    return 0


__all__ = [
    "FAULT_ENV",
    "FAULT_EXIT",
    "FAULT_POINTS",
    "CycleReport",
    "FactoryDaemon",
    "ProviderPool",
    "entry_policy",
    "env_fault_hook",
    "open_keyring",
    "resolve_image",
    "run_factory",
    "status_transition",
]
