"""`gwms frontend run` against a real embedded collector: sealed requests, counts, curb reasons.

The test plays the factory: it advertises an entry ad (with a real key ring) and a
monitoring ad with the factory's token, queues jobs in the collector's schedd, runs the
frontend as a subprocess, and checks what it published as only the factory could.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import classad2
import pytest

from gwms.credentials.keys import FactoryKeyring
from gwms.credentials.proxy import create_proxy, write_proxy
from gwms.credentials.testca import make_ca, make_user_cert
from gwms.pool import open_collector, open_schedd
from gwms.protocol import (
    EntryAd,
    FactoryClientAd,
    RequestRejected,
    build_entry_ad,
    build_factory_client_ad,
    open_credential_ad,
    parse_resource_ad,
    verify_request,
)
from tests.integration.pool_fixtures import CollectorProcess, make_collector

pytestmark = pytest.mark.integration

FRONTEND = "vo1-frontend"
FRONTEND_ID = "vo1-frontend@example.org"
FACTORY_ID = "factory@example.org"
AUTHORISED = {FRONTEND: FRONTEND_ID}
REQUEST_NAME = f"ce1@gf@{FRONTEND}.main"


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    server = make_collector(tmp_path / "collector")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keyring(tmp_path: Path) -> FactoryKeyring:
    return FactoryKeyring.generate(tmp_path / "factory-keys")


def write_proxy_file(path: Path, *, hours: float, started: datetime) -> Path:
    ca_cert, ca_key = make_ca("frontend daemon test CA")
    cert, key = make_user_cert(
        ca_cert, ca_key, "vo1 pilot", 48, not_before=started - timedelta(hours=2)
    )
    return write_proxy(create_proxy(cert, key, hours=hours, now=started), path)


def write_config(
    tmp_path: Path, collector: CollectorProcess, proxy: Path, *more: CollectorProcess
) -> Path:
    token = collector.token_files[FRONTEND_ID]
    path = tmp_path / "frontend.yaml"
    others = "".join(
        f'\n  - {{backend: embedded, url: "{c.url}", token_file: "{c.token_files[FRONTEND_ID]}"}}'
        for c in more
    )
    path.write_text(
        f"""
name: {FRONTEND}
collectors:
  - {{backend: embedded, url: "{collector.url}", token_file: "{token}"}}{others}
schedds:
  - {{backend: embedded, url: "{collector.url}", token_file: "{token}"}}
cycle: 1
groups:
  - name: main
    job_constraint: 'Owner == "vo1-frontend"'
    entries: ["gf*/*"]
    ramp_up: {{max_new_per_cycle: 4}}
credentials:
  - id: vo1_pilot
    type: x509_proxy
    path: "{proxy}"
    min_lifetime: 2h
"""
    )
    return path


def factory_side(
    collector: CollectorProcess,
    keyring: FactoryKeyring,
    factory: str = "gf",
    entry_name: str = "ce1",
) -> None:
    """Publish an entry and the factory's report on it: 2 idle and 1 running glidein for us."""
    pool = open_collector({"url": collector.url, "token_file": collector.token_files[FACTORY_ID]})
    entry = EntryAd(
        factory=factory,
        entry=entry_name,
        trust_domain="grid",
        auth_methods=("x509_proxy",),
        image_id="ami-0123",
        instance_types=("m5.large",),
        key_id=keyring.current_key_id,
        key_algorithm="x25519",
        public_key_pem=keyring.public_key_pem(),
    )
    report = FactoryClientAd(
        factory=factory,
        entry=entry_name,
        frontend=FRONTEND,
        group="main",
        idle=2,
        running=1,
        updated_at=datetime.now(UTC),
    )
    pool.advertise([build_entry_ad(entry), build_factory_client_ad(report)], lifetime=600)


def queue_jobs(collector: CollectorProcess, idle: int, running: int) -> None:
    schedd = open_schedd({"url": collector.url, "token_file": collector.token_files[FRONTEND_ID]})
    schedd.submit([classad2.ClassAd({"Cmd": "/bin/true"}) for _ in range(idle + running)])
    for n in range(running):
        machine = classad2.ClassAd({"MyType": "Machine", "Name": f"slot{n}@test"})
        machine["START"] = classad2.ExprTree("true")
        assert schedd.claim(machine) is not None


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gwms", "frontend", "run", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ours(
    collector: CollectorProcess, ad_type: str, name: str = REQUEST_NAME
) -> list[classad2.ClassAd]:
    """Our ads of ``ad_type`` as the factory reads them (credential ads: all of them)."""
    pool = open_collector({"url": collector.url, "token_file": collector.token_files[FACTORY_ID]})
    return pool.query(ad_type, "true" if ad_type == "glideclientglobal" else f'Name == "{name}"')


def test_one_cycle_publishes_a_sealed_request_credentials_and_counts_only_the_factory_can_open(
    tmp_path: Path, collector: CollectorProcess, keyring: FactoryKeyring
) -> None:
    factory_side(collector, keyring)
    queue_jobs(collector, idle=11, running=1)
    proxy = write_proxy_file(tmp_path / "vo1.proxy", hours=12, started=datetime.now(UTC))

    done = run_once(write_config(tmp_path, collector, proxy))

    assert done.returncode == 0, done.stderr
    # By hand: 11 idle jobs match ce1, the factory has 2 idle glideins for us, so 9 more are
    # needed (attenuation 1); ramp_up lets the request rise by 4 from the previous 0.
    # max running = int((11 - 2 + 0 running here) * 1.15 + 1) = 11.
    (request,) = ours(collector, "glideclient")
    assert request["ReqIdleGlideins"] == 4
    assert request["ReqMaxGlideins"] == 11
    assert request["AuthenticatedIdentity"] == FRONTEND_ID
    now = datetime.now(UTC)
    verified = verify_request(request, keyring, "gf", AUTHORISED, now)
    assert verified.identity == FRONTEND_ID
    assert verified.request.credential_ids == ("vo1_pilot",)
    (cred_ad,) = ours(collector, "glideclientglobal")
    opened = open_credential_ad(cred_ad, keyring, "gf", AUTHORISED, now)
    assert opened.credentials["vo1_pilot"].pem.get_secret_value() == proxy.read_text()
    stranger = FactoryKeyring.generate(tmp_path / "other-keys")
    with pytest.raises(RequestRejected) as refused:
        verify_request(request, stranger, "gf", AUTHORISED, now)
    assert refused.value.reason == "identity_unreadable"
    with pytest.raises(RequestRejected):
        open_credential_ad(cred_ad, stranger, "gf", AUTHORISED, now)
    (resource_ad,) = ours(collector, "glideresource")
    resource = parse_resource_ad(resource_ad)
    assert resource is not None
    assert (resource.matching_idle, resource.effective_idle, resource.matching_running) == (
        11,
        11.0,
        1,
    )
    assert (resource.requested_idle, resource.requested_max_running) == (4, 11)
    assert resource.curb_reasons == (
        "group main ramp_up max_new_per_cycle 4 limited the request to 4",
    )
    assert (
        "frontend=vo1-frontend group=main entry=ce1@gf: idle jobs 11 (effective 11.00,"
        " 11 glideins), running jobs 1 (0 here); glideins 3 (2 idle); requested idle 4,"
        " max running 11, remove NO; credential vo1_pilot; curbed: group main ramp_up"
        " max_new_per_cycle 4 limited the request to 4"
    ) in done.stderr
    assert proxy.read_text().split("-----")[2] not in done.stderr  # no secret in the log


def test_a_vanished_entry_loses_its_request_ads_at_the_next_cycle(
    tmp_path: Path, collector: CollectorProcess, keyring: FactoryKeyring
) -> None:
    factory_side(collector, keyring)
    queue_jobs(collector, idle=3, running=0)
    config = write_config(
        tmp_path, collector, write_proxy_file(tmp_path / "p", hours=12, started=datetime.now(UTC))
    )
    assert run_once(config).returncode == 0
    assert len(ours(collector, "glideclient")) == 1
    factory = open_collector(
        {"url": collector.url, "token_file": collector.token_files[FACTORY_ID]}
    )
    factory.invalidate("glidefactory", 'Name == "ce1@gf"')

    done = run_once(config)

    assert done.returncode == 0, done.stderr
    assert ours(collector, "glideclient") == []
    assert ours(collector, "glideresource") == []
    assert ours(collector, "glideclientglobal") == []
    assert "0 entries of 0 factories from 1/1 collectors" in done.stderr


def test_an_expired_proxy_requests_zero_and_says_why_in_the_ad_and_the_log(
    tmp_path: Path, collector: CollectorProcess, keyring: FactoryKeyring
) -> None:
    factory_side(collector, keyring)
    queue_jobs(collector, idle=5, running=0)
    started = datetime.now(UTC) - timedelta(hours=4)
    proxy = write_proxy_file(tmp_path / "old.proxy", hours=1, started=started)

    done = run_once(write_config(tmp_path, collector, proxy))

    assert done.returncode == 0, done.stderr
    reason = "no usable credential: proxy vo1_pilot expired 3 h ago"
    (request,) = ours(collector, "glideclient")
    assert request["ReqIdleGlideins"] == 0
    assert list(request["ReqCredentialIds"]) == []
    resource = parse_resource_ad(ours(collector, "glideresource")[0])
    assert resource is not None
    assert resource.matching_idle == 5
    assert resource.curb_reasons == (reason,)
    assert f"WARNING frontend=vo1-frontend group=main entry=ce1@gf: {reason}" in done.stderr
    assert ours(collector, "glideclientglobal") == []


def test_sigterm_between_cycles_stops_the_daemon_cleanly(
    tmp_path: Path, collector: CollectorProcess, keyring: FactoryKeyring
) -> None:
    factory_side(collector, keyring)
    config = write_config(
        tmp_path, collector, write_proxy_file(tmp_path / "p", hours=12, started=datetime.now(UTC))
    )
    log = tmp_path / "frontend.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gwms", "frontend", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "cycle done" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "SIGTERM received: stopping after this cycle" in log.read_text()
    assert "stopped after cycle" in log.read_text()


def test_two_factories_behind_two_collectors_each_get_their_own_sealed_request(
    tmp_path: Path, collector: CollectorProcess
) -> None:
    other = make_collector(tmp_path / "collector-b")
    other.start()
    try:
        ring_a = FactoryKeyring.generate(tmp_path / "keys-a")
        ring_b = FactoryKeyring.generate(tmp_path / "keys-b")
        factory_side(collector, ring_a, "gf1", "ce1")
        factory_side(other, ring_b, "gf2", "ce2")
        queue_jobs(collector, idle=6, running=0)
        proxy = write_proxy_file(tmp_path / "p", hours=12, started=datetime.now(UTC))

        done = run_once(write_config(tmp_path, collector, proxy, other))

        assert done.returncode == 0, done.stderr
        now = datetime.now(UTC)
        # 6 jobs match both entries: 3 effective each, minus 2 idle glideins = 1 each;
        # max running int((3 - 2) * 1.15 + 1) = 2.
        for pool, ring, stranger, name in (
            (collector, ring_a, ring_b, f"ce1@gf1@{FRONTEND}.main"),
            (other, ring_b, ring_a, f"ce2@gf2@{FRONTEND}.main"),
        ):
            (request,) = ours(pool, "glideclient", name)
            assert (request["ReqIdleGlideins"], request["ReqMaxGlideins"]) == (1, 2)
            factory = request["ReqFactoryName"]
            assert verify_request(request, ring, factory, AUTHORISED, now).identity == FRONTEND_ID
            with pytest.raises(RequestRejected):
                verify_request(request, stranger, factory, AUTHORISED, now)
            (cred_ad,) = ours(pool, "glideclientglobal")
            assert cred_ad["ReqFactoryName"] == factory
            assert open_credential_ad(cred_ad, ring, factory, AUTHORISED, now).credentials
        assert ours(collector, "glideclient", f"ce2@gf2@{FRONTEND}.main") == []
        assert ours(other, "glideclient", f"ce1@gf1@{FRONTEND}.main") == []
    finally:
        other.stop()
