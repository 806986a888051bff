"""The Collector and Schedd contract on every backend, plus the embedded server's own rules.

Embedded: a real `gwms collector serve` subprocess on 127.0.0.1. HTCondor: a personal
pool, only where HTCondor's daemons are installed.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import classad2
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gwms import classads
from gwms.cli import main
from gwms.pool import PoolError, open_collector, open_schedd
from gwms.pool.base import Collector, JobStatus, Schedd
from gwms.pool.embedded.client import EmbeddedSchedd
from tests.integration.pool_fixtures import IDENTITIES, CollectorProcess, make_collector

pytestmark = pytest.mark.integration

FRONTEND, FACTORY = IDENTITIES


@dataclass
class Backend:
    name: str
    collector: Collector
    schedd: Schedd
    identity: str | None  # what the collector should stamp; None: whatever HTCondor says


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    server = make_collector(tmp_path_factory.mktemp("collector"))
    server.start()
    yield server
    server.stop()


def _embedded_config(server: CollectorProcess, identity: str = FRONTEND) -> dict[str, str]:
    return {
        "backend": "embedded",
        "url": server.url,
        "token_file": str(server.token_files[identity]),
    }


@pytest.fixture(scope="module")
def htcondor_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if shutil.which("condor_master") is None:
        pytest.skip("needs HTCondor daemons: condor_master not on PATH")
    import htcondor2
    from htcondor2.personal import PersonalPool

    pool = PersonalPool(local_dir=tmp_path_factory.mktemp("condor"))
    pool.start()
    try:
        with pool.use_config():
            address = htcondor2.Collector().locate(htcondor2.DaemonType.Collector)["MyAddress"]
            yield {"backend": "htcondor", "address": address}
    finally:
        pool.stop()


@pytest.fixture(params=["embedded", "htcondor"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "embedded":
        server: CollectorProcess = request.getfixturevalue("embedded_server")
        config = _embedded_config(server)
        backend = Backend("embedded", open_collector(config), open_schedd(config), FRONTEND)
    else:
        config = request.getfixturevalue("htcondor_pool")
        backend = Backend("htcondor", open_collector(config), open_schedd(config), None)
    backend.schedd.remove("true")  # every test starts with no idle job
    return backend


def _ad(my_type: str, name: str, **attrs: object) -> classad2.ClassAd:
    return classads.json_to_ad({"MyType": my_type, "Name": name, **attrs})


def _fresh_type() -> str:
    """A MyType no other test uses, so tests sharing one collector never see each other's ads."""
    return f"gwmstest{uuid.uuid4().hex[:10]}"


# -- collector contract, every backend ----------------------------------------------------------


def test_advertised_ads_come_back_by_type_and_constraint(backend: Backend) -> None:
    kind = _fresh_type()
    backend.collector.advertise(
        [_ad(kind, "entry_a", Slots=4), _ad(kind, "entry_b", Slots=0), _ad(_fresh_type(), "x")]
    )
    assert sorted(ad["Name"] for ad in backend.collector.query(kind)) == ["entry_a", "entry_b"]
    busy = backend.collector.query(kind, "Slots > 0")
    assert [ad["Name"] for ad in busy] == ["entry_a"]


def test_readvertising_the_same_type_and_name_replaces_the_ad(backend: Backend) -> None:
    kind = _fresh_type()
    backend.collector.advertise([_ad(kind, "entry_a", Idle=1, Old=True)])
    backend.collector.advertise([_ad(kind, "entry_a", Idle=7)])
    ads = backend.collector.query(kind)
    assert len(ads) == 1
    assert ads[0]["Idle"] == 7
    assert "Old" not in ads[0]


def test_projection_returns_the_requested_attributes_and_not_the_others(backend: Backend) -> None:
    kind = _fresh_type()
    backend.collector.advertise([_ad(kind, "e", Keep=1, Drop="big" * 100)])
    (ad,) = backend.collector.query(kind, "true", ["Keep", "Name"])
    assert ad["Keep"] == 1
    assert ad["Name"] == "e"
    assert "Drop" not in ad


def test_expressions_survive_the_round_trip_unevaluated(backend: Backend) -> None:
    kind = _fresh_type()
    requirement = 'TARGET.Memory >= 2048 && stringListMember("x", TARGET.Tags)'
    backend.collector.advertise(
        [_ad(kind, "e", Requirements={"expr": requirement}, List={"expr": '{1, "a"}'})]
    )
    (ad,) = backend.collector.query(kind)
    assert isinstance(ad.lookup("Requirements"), classad2.ExprTree)
    assert ad.lookup("Requirements") == classad2.ExprTree(requirement)
    assert ad["List"] == [1, "a"]


def test_invalidate_drops_only_the_matching_ads(backend: Backend) -> None:
    kind = _fresh_type()
    backend.collector.advertise([_ad(kind, "keep", Client="a"), _ad(kind, "drop", Client="b")])
    backend.collector.invalidate(kind, 'Client == "b"')
    assert [ad["Name"] for ad in backend.collector.query(kind)] == ["keep"]


def test_the_collector_stamps_the_authenticated_identity_over_a_forged_one(
    backend: Backend,
) -> None:
    kind = _fresh_type()
    backend.collector.advertise([_ad(kind, "req", AuthenticatedIdentity="victim@example.org")])
    (ad,) = backend.collector.query(kind)
    assert ad.get("AuthenticatedIdentity") != "victim@example.org"
    if backend.identity is not None:
        assert ad["AuthenticatedIdentity"] == backend.identity


def test_ads_past_their_lifetime_are_never_returned(backend: Backend) -> None:
    if backend.name == "htcondor":
        pytest.skip("HTCondor expires ads in its housekeeping cycle, minutes apart")
    kind = _fresh_type()
    backend.collector.advertise([_ad(kind, "short", ClassAdLifetime=1), _ad(kind, "long")])
    backend.collector.advertise([_ad(kind, "by_argument")], lifetime=1)
    time.sleep(2.1)
    assert [ad["Name"] for ad in backend.collector.query(kind)] == ["long"]


# -- schedd contract, every backend -------------------------------------------------------------


def test_submitted_jobs_are_idle_and_carry_the_attributes_the_schedd_keeps(
    backend: Backend,
) -> None:
    marker = uuid.uuid4().hex
    job = classads.json_to_ad({"Cmd": "/bin/true", "GwmsTestMarker": marker, "JobStatus": 4})
    ids = backend.schedd.submit([job, classads.copy_ad(job)])
    assert len(ids) == 2
    jobs = backend.schedd.query(f"GwmsTestMarker == {classads.quote(marker)}")
    assert sorted(f"{j['ClusterId']}.{j['ProcId']}" for j in jobs) == sorted(ids)
    for queued in jobs:
        assert queued["JobStatus"] == JobStatus.IDLE
        assert isinstance(queued["QDate"], int)
        assert isinstance(queued["EnteredCurrentStatus"], int)
        assert isinstance(queued["Owner"], str)


def test_remove_marks_only_the_matching_jobs_removed(backend: Backend) -> None:
    marker = uuid.uuid4().hex
    jobs = [classads.json_to_ad({"Cmd": "/bin/true", "M": marker, "N": n}) for n in range(3)]
    backend.schedd.submit(jobs)
    assert backend.schedd.remove(f"M == {classads.quote(marker)} && N >= 1") == 2
    status = {
        j["N"]: j["JobStatus"] for j in backend.schedd.query(f"M == {classads.quote(marker)}")
    }
    assert status[0] == JobStatus.IDLE
    if backend.name == "embedded":  # HTCondor drops removed jobs from the queue
        assert status[1] == status[2] == JobStatus.REMOVED


# -- the embedded server's own rules ------------------------------------------------------------


def _post(
    server: CollectorProcess, path: str, body: object, token: str | None = None
) -> requests.Response:
    if token is None:
        token = server.token_files[FRONTEND].read_text().strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{server.url}{path}", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/ads", {"ads": [{"MyType": "x", "Name": "n", "Bad": {"expr": "1 +"}}]}, "ads[0].Bad"),
        ("/v1/ads", {"ads": [{"MyType": "x"}]}, "Name"),
        ("/v1/ads", {"ads": [{"MyType": "x", "Name": "n", "bad name": 1}]}, "attribute name"),
        ("/v1/ads", {"ads": [{"MyType": "x", "Name": "n", "ClassAdLifetime": -5}]}, "Lifetime"),
        ("/v1/ads/query", {"type": "x", "constraint": "Slots >"}, "constraint"),
        ("/v1/ads/query", {"type": "x", "constraint": "true junk"}, "constraint"),
        ("/v1/jobs", {"jobs": "not a list"}, "jobs"),
        ("/v1/jobs/claim", {"machine": {"Name": "slot1"}}, "START"),
        ("/v1/jobs/remove", {}, "constraint"),
    ],
)
def test_malformed_requests_are_refused_with_400_and_a_one_line_reason(
    embedded_server: CollectorProcess, path: str, body: object, reason: str
) -> None:
    response = _post(embedded_server, path, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert reason in error
    assert "\n" not in error


def test_a_body_that_is_not_json_is_refused_with_400(embedded_server: CollectorProcess) -> None:
    token = embedded_server.token_files[FRONTEND].read_text().strip()
    response = requests.post(
        f"{embedded_server.url}/v1/ads",
        data=b"MyType = x",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "JSON object" in response.json()["error"]


def test_a_wrong_or_missing_token_is_refused_with_401(embedded_server: CollectorProcess) -> None:
    for token in ("not-a-token", ""):
        response = _post(embedded_server, "/v1/ads/query", {"type": "x"}, token=token)
        assert response.status_code == 401
        assert "token" in response.json()["error"]
    bad = embedded_server.workdir / "bad.token"
    bad.write_text("nope\n")
    collector = open_collector({"url": embedded_server.url, "token_file": str(bad)})
    with pytest.raises(PoolError, match="refused"):
        collector.query("x")


def test_unknown_routes_are_404_and_healthz_needs_no_token(
    embedded_server: CollectorProcess,
) -> None:
    assert _post(embedded_server, "/v1/nothing-here", {}).status_code == 404
    assert requests.get(f"{embedded_server.url}/healthz", timeout=5).json() == {"status": "ok"}


def test_an_unreachable_collector_is_a_one_sentence_pool_error() -> None:
    from tests.integration.pool_fixtures import free_port

    collector = open_collector({"url": f"http://127.0.0.1:{free_port()}", "timeout": 2})
    with pytest.raises(PoolError, match="cannot reach the collector"):
        collector.query("x")


def test_claim_takes_the_oldest_idle_job_that_matches_both_ways(backend: Backend) -> None:
    if backend.name == "htcondor":
        pytest.skip("in an HTCondor pool the negotiator and condor_startd claim jobs")
    schedd = backend.schedd
    big = classads.json_to_ad(
        {
            "Cmd": "/bin/big",
            "RequestMemory": 8000,
            "Requirements": {"expr": "TARGET.Memory >= MY.RequestMemory"},
        }
    )
    vetoed = classads.json_to_ad({"Cmd": "/bin/vetoed", "Requirements": True, "Vetoed": True})
    first = classads.json_to_ad(
        {"Cmd": "/bin/first", "Requirements": {"expr": "TARGET.Memory > 0"}}
    )
    second = classads.copy_ad(first)
    second["Cmd"] = "/bin/second"
    for job in (big, vetoed, first, second):  # separate clusters, in this order
        schedd.submit([job])
    machine = classads.json_to_ad(
        {"Name": "slot1@glidein-1", "Memory": 2048, "START": {"expr": "TARGET.Vetoed =!= true"}}
    )
    claimed = schedd.claim(machine)
    assert claimed is not None
    assert claimed["Cmd"] == "/bin/first"
    assert claimed["JobStatus"] == JobStatus.RUNNING
    assert claimed["RemoteHost"] == "slot1@glidein-1"
    assert schedd.claim(machine)["Cmd"] == "/bin/second"
    assert schedd.claim(machine) is None  # big does not fit, vetoed is refused by START
    job_id = f"{claimed['ClusterId']}.{claimed['ProcId']}"
    done = schedd.complete(job_id, 3, "last lines\n")
    assert done["JobStatus"] == JobStatus.COMPLETED
    assert done["ExitCode"] == 3
    assert done["GwmsOutputTail"] == "last lines\n"
    with pytest.raises(PoolError, match="not running"):
        schedd.complete(job_id, 0)


_CLAIMER = """
import json, sys
from gwms import classads
from gwms.pool import open_schedd
schedd = open_schedd({"url": sys.argv[1], "token_file": sys.argv[2]})
machine = classads.json_to_ad({"Name": sys.argv[3], "Memory": 1, "START": True})
got = []
while (job := schedd.claim(machine)) is not None:
    got.append(f"{job['ClusterId']}.{job['ProcId']}")
print(json.dumps(got))
"""


@pytest.mark.slow
def test_concurrent_claimers_never_get_the_same_job(embedded_server: CollectorProcess) -> None:
    config = _embedded_config(embedded_server)
    schedd = open_schedd(config)
    schedd.remove("true")
    job = classads.json_to_ad({"Cmd": "/bin/true", "Requirements": True})
    submitted = set(schedd.submit([classads.copy_ad(job) for _ in range(60)]))
    token = str(embedded_server.token_files[FACTORY])
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, embedded_server.url, token, f"proc{n}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    results: list[list[str]] = []

    def claim_in_thread(name: str) -> None:
        mine = EmbeddedSchedd(embedded_server.url, token)
        machine = classads.json_to_ad({"Name": name, "Memory": 1, "START": True})
        got = []
        while (claimed := mine.claim(machine)) is not None:
            got.append(f"{claimed['ClusterId']}.{claimed['ProcId']}")
        results.append(got)

    threads = [threading.Thread(target=claim_in_thread, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for process in processes:
        out, _ = process.communicate(timeout=60)
        results.append(json.loads(out))
    claimed = [job_id for got in results for job_id in got]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert set(claimed) == submitted
    assert sum(1 for got in results if got) >= 2, "the claimers did not actually overlap"


@pytest.mark.slow
def test_a_restart_keeps_ads_their_expiry_and_jobs(tmp_path: Path) -> None:
    server = make_collector(tmp_path)
    server.start()
    try:
        config = _embedded_config(server)
        open_collector(config).advertise(
            [
                _ad("glidefactory", "entry_a", Slots=3),
                _ad("glidefactory", "brief", ClassAdLifetime=2),
            ]
        )
        ids = open_schedd(config).submit([classads.json_to_ad({"Cmd": "/bin/true"})])
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        assert "collector stopped" in server.log.read_text()
        server.start()
        config = _embedded_config(server)
        (ad,) = open_collector(config).query("glidefactory", 'Name == "entry_a"')
        assert ad["Slots"] == 3
        assert ad["AuthenticatedIdentity"] == FRONTEND
        (job,) = open_schedd(config).query()
        assert f"{job['ClusterId']}.{job['ProcId']}" == ids[0]
        time.sleep(max(0.0, 2.2 - (time.monotonic() - started)))
        names = [a["Name"] for a in open_collector(config).query("glidefactory")]
        assert names == ["entry_a"]  # "brief" expired on schedule, across the restart
        assert server.stop(signal.SIGINT) == 0
    finally:
        if server.proc is not None:
            server.stop()


def test_without_a_tokens_file_clients_are_anonymous_at_their_address(tmp_path: Path) -> None:
    server = make_collector(tmp_path, with_tokens=False)
    server.start()
    try:
        collector = open_collector({"url": server.url})
        collector.advertise([_ad("glideclient", "req", AuthenticatedIdentity="admin@example.org")])
        (ad,) = collector.query("glideclient")
        assert ad["AuthenticatedIdentity"] == "anonymous@127.0.0.1"
        assert "ANY client" in server.log.read_text()
    finally:
        server.stop()


def _self_signed(workdir: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_tls_serves_the_same_api_and_clients_verify_the_certificate(tmp_path: Path) -> None:
    server = make_collector(tmp_path)
    server.tls = _self_signed(tmp_path)
    server.start()
    try:
        config = {**_embedded_config(server), "ca_file": str(server.tls[0])}
        open_collector(config).advertise([_ad("glidefactory", "tls_entry")])
        assert [ad["Name"] for ad in open_collector(config).query("glidefactory")] == ["tls_entry"]
        unverified = {**_embedded_config(server)}
        with pytest.raises(PoolError, match="cannot reach"):
            open_collector(unverified).query("glidefactory")
    finally:
        server.stop()


def test_the_jobs_cli_submits_lists_and_removes(
    embedded_server: CollectorProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GWMS_COLLECTOR_URL", embedded_server.url)
    monkeypatch.setenv("GWMS_TOKEN_FILE", str(embedded_server.token_files[FRONTEND]))
    assert main(["jobs", "rm", "--all"]) == 0
    ads_file = tmp_path / "jobs.ads"
    ads_file.write_text('Cmd = "/bin/a"\nRequestCpus = 1\n\nCmd = "/bin/b"\nRequestCpus = 2\n')
    capsys.readouterr()
    assert main(["jobs", "submit", str(ads_file)]) == 0
    file_ids = capsys.readouterr().out.split()
    assert len(file_ids) == 2
    argv = ["jobs", "submit", "--count", "3", "--requirements", "TARGET.Memory > 1"]
    assert main([*argv, "--attr", 'Cmd="/bin/c"']) == 0
    count_ids = capsys.readouterr().out.split()
    assert len(count_ids) == 3
    assert main(["jobs", "rm", file_ids[0]]) == 0
    assert "removed 1 job(s)" in capsys.readouterr().out
    assert main(["jobs", "list", "--constraint", "JobStatus == 1"]) == 0
    listed = capsys.readouterr().out
    assert file_ids[1] in listed
    assert file_ids[0] not in listed
    assert "idle" in listed
    assert main(["jobs", "list", "--constraint", "JobStatus =="]) == 2
    assert "constraint" in capsys.readouterr().err
    monkeypatch.delenv("GWMS_COLLECTOR_URL")
    assert main(["jobs", "list"]) == 2
    assert "GWMS_COLLECTOR_URL" in capsys.readouterr().err
