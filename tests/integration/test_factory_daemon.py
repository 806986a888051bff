"""The factory daemon: verified requests become journaled, tagged batches; crashes leak nothing.

In-process tests drive `FactoryDaemon` over the embedded collector's real SQLite store
(each frontend/factory stamped with its identity, as the server does from tokens) and the
counting cloud double; the integration test runs `gwms factory run --once` against a real
`gwms collector serve` on 127.0.0.1. Test-only hook: `registry.PROVIDERS["local"]` is
pointed (monkeypatch, in-process) at the counting double; the local provider is not written yet.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import classad2
import pytest
from cryptography import x509

from gwms import cli
from gwms.config import load_factory_config
from gwms.credentials.keys import FactoryKeyring
from gwms.credentials.model import X509ProxyCredential
from gwms.credentials.proxy import create_proxy
from gwms.credentials.testca import make_ca, make_user_cert
from gwms.factory.daemon import FAULT_POINTS, FactoryDaemon, ProviderPool
from gwms.factory.decisions import Policy
from gwms.factory.journal import LIVE_STATES, BatchState, Journal
from gwms.pool.embedded.store import Store
from gwms.protocol import (
    RemoveExcess,
    build_credential_ad,
    build_request_ad,
    make_credential_ad,
    make_request,
    parse_entry_ad,
    parse_factory_client_ad,
)
from gwms.protocol.wire import AdKind
from gwms_context import userdata as codec
from tests.fakes.counting_provider import CountingProvider, FakeCloud
from tests.integration.pool_fixtures import make_collector

FACTORY = "gfactory-test"
FRONTEND = "vo1-frontend"
FRONTEND_ID = "vo1-frontend@example.org"
FACTORY_ID = "factory@example.org"


def write_config(tmp: Path, *, collector_url: str = "http://127.0.0.1:9", token: Path | None = None,
                 idle: int = 2, max_running: int = 4) -> Path:  # fmt: skip
    token = token or tmp / "unused.token"
    path = tmp / "factory.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: {FACTORY}
        collector: {{backend: embedded, url: "{collector_url}", token_file: "{token}"}}
        state_dir: {tmp / "state"}
        cycle: 60
        web: {{listen: "127.0.0.1:8319", base_url: "http://127.0.0.1:8319"}}
        frontends:
          - {{name: {FRONTEND}, identity: "{FRONTEND_ID}", max_glideins: 50}}
        clouds:
          - {{name: fake, type: local}}
        entries:
          - name: fake_entry
            cloud: fake
            image: img-123
            instance_types: [small]
            limits: {{max_running: {max_running}, max_idle: {idle}, max_launches_per_cycle: 10}}
            lifetimes: {{max: 2h, retire: 1h30m, idle_shutdown: 10m}}
            proxy_margin: 1h
        """)
    )
    return path


@dataclass
class Pki:
    proxy_pem: str
    secrets: tuple[str, ...]  # strings that must never appear in logs


def make_pki(now: datetime) -> Pki:
    ca_cert, ca_key = make_ca("factory test CA")
    cert, key = make_user_cert(
        ca_cert, ca_key, "vo1 pilot", hours=48, not_before=now - timedelta(hours=1)
    )
    proxy = create_proxy(cert, key, (ca_cert,), hours=24, now=now)
    pem = proxy.to_pem().decode()
    key_lines = [line for line in pem.split("-----")[6].splitlines() if len(line) > 40]
    return Pki(proxy_pem=pem, secrets=tuple(key_lines[:3]))


class AsIdentity:
    """The embedded collector's store, as one authenticated publisher sees it."""

    def __init__(self, store: Store, identity: str) -> None:
        self.store, self.identity = store, identity

    def advertise(self, ads: Sequence[classad2.ClassAd], lifetime: int | None = None) -> int:
        return self.store.advertise(ads, self.identity, lifetime)

    def query(self, ad_type: str = "Any", constraint: object = "true", projection=None):
        return self.store.query_ads(ad_type, constraint, projection)

    def invalidate(self, ad_type: str, constraint: object = "true") -> int:
        return self.store.invalidate(ad_type, constraint)


def publish_request(collector, pki: Pki, *, idle: int, max_running: int, now: datetime,
                    group: str = "main",
                    remove_excess: RemoveExcess = RemoveExcess.NO) -> None:  # fmt: skip
    """What the frontend does: read the entry ad, seal a request and its proxy to the key."""
    [ad] = collector.query(AdKind.ENTRY.value, f'FactoryName == "{FACTORY}"')
    entry = parse_entry_ad(ad)
    cred = X509ProxyCredential(id="vo1-proxy", trust_domain="grid", pem=pki.proxy_pem)
    request = make_request(
        entry, frontend=FRONTEND, group=group, identity=FRONTEND_ID, idle=idle,
        max_running=max_running, now=now, remove_excess=remove_excess,
        credential_ids=("vo1-proxy",),
    )  # fmt: skip
    cred_ad = make_credential_ad(
        factory=FACTORY, public_key_pem=entry.public_key_pem, frontend=FRONTEND,
        identity=FRONTEND_ID, credentials=[cred], now=now,
    )  # fmt: skip
    collector.advertise([build_request_ad(request), build_credential_ad(cred_ad)])


class Crash(Exception):
    """A simulated process death at a fault point."""


class World:
    """A factory over a persistent state dir, a collector store and one fake cloud."""

    def __init__(self, tmp: Path, **config_args: int) -> None:
        self.tmp = tmp
        self.config = load_factory_config(write_config(tmp, **config_args))
        self.store = Store(tmp / "pool.sqlite")
        self.cloud = FakeCloud("fake", page_size=100)
        self.keyring = FactoryKeyring.generate(tmp / "state" / "keys")
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.pki = make_pki(self.now)

    def daemon(self, fault: Callable[[str], None] = lambda _p: None) -> FactoryDaemon:
        pool = ProviderPool(
            self.config,
            build=lambda cloud, **kw: CountingProvider(
                fake=self.cloud, factory=kw["factory"], wallclock=lambda: self.now
            ),
        )
        return FactoryDaemon(
            self.config,
            collector=AsIdentity(self.store, FACTORY_ID),
            keyring=FactoryKeyring.load(self.tmp / "state" / "keys"),
            journal=Journal.in_state_dir(self.tmp / "state"),
            providers=pool,
            clock=lambda: self.now,
            fault=fault,
            pilot_files={"glidein_startup.sh": "ab" * 32},
            policy=Policy(listing_grace=120),
        )

    def frontend(self, **kw) -> None:
        publish_request(AsIdentity(self.store, FRONTEND_ID), self.pki, now=self.now, **kw)

    def tick(self, seconds: int = 150) -> None:
        self.now += timedelta(seconds=seconds)
        self.cloud.advance()


def assert_no_leak_no_duplicate(world: World, expected: int) -> None:
    live = world.cloud.live(FACTORY)
    ids = [i.glidein_id for i in live]
    assert len(ids) == len(set(ids)), "a glidein id was launched twice"
    assert len(live) == expected
    with Journal.in_state_dir(world.tmp / "state") as journal:
        tracked = {g.cloud_id for g in journal.glideins(LIVE_STATES)}
        assert tracked == {i.cloud_id for i in live}, "a VM is unknown to the journal (leak)"
        assert not journal.batches(BatchState.LAUNCHING)


def test_a_verified_request_launches_one_batch_that_is_journaled_and_tagged(tmp_path: Path) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    daemon.cycle()  # publishes the entry ad the frontend needs
    world.frontend(idle=2, max_running=4)
    report = daemon.cycle()
    assert report.requests_accepted == 1
    assert len(report.launched) == 1
    [launch] = world.cloud.launches
    assert launch.count == 2
    assert launch.batch_id == report.launched[0]
    doc = codec.decode(launch.userdata)
    assert doc.glidein_id == launch.batch_id
    assert doc.client == f"{FRONTEND}.main"
    assert {i.glidein_id for i in world.cloud.live()} == {
        f"{launch.batch_id}.0",
        f"{launch.batch_id}.1",
    }
    # Next cycle: VMs still idle (pending) -> nothing more is launched.
    assert daemon.cycle().launched == []


def test_the_request_is_cut_by_the_entry_limits_and_reported_in_the_monitoring_ad(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, idle=1, max_running=4)
    daemon = world.daemon()
    daemon.cycle()
    world.frontend(idle=5, max_running=10)
    daemon.cycle()
    assert [b.count for b in world.cloud.launches] == [1]
    [ad] = world.store.query_ads(AdKind.FACTORY_CLIENT.value, "true")
    monitor = parse_factory_client_ad(ad)
    assert monitor.idle == 1
    assert monitor.requested_idle == 5
    assert "entry_max_idle" in monitor.limits_applied


def test_vms_past_max_lifetime_are_reaped_and_refusals_become_zombies(tmp_path: Path) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    daemon.cycle()
    world.frontend(idle=1, max_running=1)
    daemon.cycle()
    [vm] = world.cloud.live()
    world.cloud.refuse_terminate.add(vm.cloud_id)
    world.now += timedelta(hours=2, seconds=1)  # past lifetimes.max
    for _ in range(3):
        world.frontend(idle=0, max_running=0)
        daemon.cycle()
        world.now += timedelta(hours=1)
    with Journal.in_state_dir(tmp_path / "state") as journal:
        [record] = journal.glideins()
    assert record.state == "zombie"
    assert record.terminate_attempts == 3
    [ad] = world.store.query_ads(AdKind.FACTORY_CLIENT.value, "true")
    assert parse_factory_client_ad(ad).zombie == 1
    world.cloud.refuse_terminate.clear()
    world.now += timedelta(hours=2)
    daemon.cycle()
    world.tick()
    daemon.cycle()
    assert world.cloud.live() == []


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_crash_at_any_launch_step_neither_leaks_nor_duplicates_vms(
    tmp_path: Path, point: str
) -> None:
    world = World(tmp_path, idle=3, max_running=3)
    world.daemon().cycle()
    world.frontend(idle=3, max_running=3)

    def crash_at(name: str) -> None:
        if name == point:
            raise Crash(name)

    with pytest.raises(Crash):
        world.daemon(fault=crash_at).cycle()
    for _ in range(4):  # restarted factory: reconcile on start, then cycles
        world.tick()
        world.frontend(idle=3, max_running=3)
        world.daemon().cycle()
    assert_no_leak_no_duplicate(world, expected=3)


def test_a_launch_whose_answer_was_lost_is_settled_by_tag_not_relaunched(tmp_path: Path) -> None:
    world = World(tmp_path, idle=2, max_running=2)
    daemon = world.daemon()
    daemon.cycle()
    world.frontend(idle=2, max_running=2)
    world.cloud.lose_next_launch_answer = True
    report = daemon.cycle()
    assert report.launched == []
    assert report.launch_errors
    report = daemon.cycle()
    assert report.reconcile.launched == [world.cloud.launches[0].batch_id]
    assert world.cloud.calls["launch"] == 1
    assert_no_leak_no_duplicate(world, expected=2)


def test_vms_tagged_by_this_factory_but_never_journaled_are_terminated(tmp_path: Path) -> None:
    world = World(tmp_path)
    daemon = world.daemon()
    daemon.cycle()
    stranger = CountingProvider(fake=world.cloud, factory=FACTORY)
    from gwms.factory.providers.base import LaunchRequest

    stranger.launch(
        LaunchRequest(
            batch_id="gl-unknown",
            count=1,
            entry="fake_entry",
            client="x.y",
            image="i",
            instance_type="small",
            userdata=b"",
            client_token="t",
        )
    )
    report = daemon.cycle()
    assert len(report.reconcile.orphans_terminated) == 1


@pytest.mark.integration
def test_factory_run_once_serves_a_real_collector_and_rejects_tampered_requests(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gwms.factory.providers import registry
    from gwms.pool import open_collector

    server = make_collector(tmp_path / "pool")
    server.start()
    try:
        # Test-only hook: the `local` cloud type is served by the counting double.
        monkeypatch.setitem(
            registry.PROVIDERS, "local", "tests.fakes.counting_provider:CountingProvider"
        )
        CountingProvider.reset()
        config = write_config(
            tmp_path, collector_url=server.url, token=server.token_files[FACTORY_ID]
        )
        caplog.set_level(logging.INFO)
        assert cli.main(["factory", "run", "--config", str(config), "--once"]) == 0
        frontend = open_collector(
            {"backend": "embedded", "url": server.url,
             "token_file": str(server.token_files[FRONTEND_ID])}
        )  # fmt: skip
        factory_side = open_collector(
            {"backend": "embedded", "url": server.url,
             "token_file": str(server.token_files[FACTORY_ID])}
        )  # fmt: skip
        now = datetime.now(UTC)
        pki = make_pki(now)
        publish_request(frontend, pki, idle=2, max_running=4, now=now)
        # Tampered: one character of the sealed identity changed in transit.
        publish_request(frontend, pki, idle=1, max_running=4, now=now, group="tampered")
        [tampered] = frontend.query(AdKind.REQUEST.value, 'GroupName == "tampered"')
        sealed = tampered["ReqEncIdentity"]
        middle = len(sealed) - 20
        flipped = "A" if sealed[middle] != "A" else "B"
        tampered["ReqEncIdentity"] = sealed[:middle] + flipped + sealed[middle + 1 :]
        frontend.advertise([tampered])
        # Replayed: another identity (here the factory's) republishes a frontend request.
        publish_request(frontend, pki, idle=1, max_running=4, now=now, group="replay")
        [replay] = frontend.query(AdKind.REQUEST.value, 'GroupName == "replay"')
        factory_side.advertise([replay])

        assert cli.main(["factory", "run", "--config", str(config), "--once"]) == 0
        cloud = CountingProvider.clouds["fake"]
        assert [(b.count, b.client) for b in cloud.launches] == [(2, f"{FRONTEND}.main")]
        doc = codec.decode(cloud.launches[0].userdata)
        cert = x509.load_pem_x509_certificate(doc.x509_proxy.encode())
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        # max 2h + margin 1h, and not_before is backdated 5 min for clock skew.
        assert timedelta(hours=3) <= lifetime <= timedelta(hours=3, minutes=6)
        assert doc.max_seconds == 7200
        entries = factory_side.query(AdKind.ENTRY.value, "true")
        assert [parse_entry_ad(a).entry for a in entries] == ["fake_entry"]
        logs = caplog.text + capsys.readouterr().err
        assert "identity_tampered" in logs
        assert "replayed" in logs
        for secret in (*pki.secrets, doc.log_upload_token):
            assert secret not in logs
    finally:
        server.stop()
