"""The factory web service over real HTTP on 127.0.0.1: pilot files, log and status uploads."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import EnvironBuilder, run_wsgi_app

from gwms.factory import upload_tokens
from gwms.factory.metrics import FactoryMetrics
from gwms.factory.web import (
    WebServer,
    create_app,
    latest_status,
    log_upload_url,
    serve,
    status_url,
)
from gwms.factory.webarea import WebArea, build_manifest, read_manifest

pytestmark = pytest.mark.integration

ENTRY, CLIENT, BATCH = "ec2_us_east_1", "vo1-frontend.main", "gl-20261122-000001-ab12cd"
MAX_UPLOAD = 64 * 1024
TIMEOUT = 10


@dataclass
class Factory:
    """A running web service and what a test needs to talk to it."""

    server: WebServer
    web_dir: Path
    upload_dir: Path
    secret: bytes
    metrics: FactoryMetrics

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, batch: str = BATCH, expires_in: float = 3600) -> str:
        return upload_tokens.issue(self.secret, ENTRY, CLIENT, batch, int(time.time() + expires_in))

    def log_url(self, index: int, name: str, batch: str = BATCH) -> str:
        return f"{log_upload_url(self.url, ENTRY, CLIENT, batch)}/{index}/{name}"

    def glidein_dir(self, index: int, batch: str = BATCH) -> Path:
        return self.upload_dir / ENTRY / CLIENT / f"{batch}.{index}"

    def stored_files(self) -> list[Path]:
        return sorted(p for p in self.upload_dir.rglob("*") if p.is_file())

    def metric(self, name: str, **labels: str) -> float:
        text = requests.get(f"{self.url}/metrics", timeout=TIMEOUT).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return 0.0


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[Factory]:
    web_dir = tmp_path / "web"
    web_dir.mkdir()
    (web_dir / "glidein_startup.sh").write_bytes(b"#!/bin/sh\necho starting glidein\n")
    (web_dir / "condor.tar.gz").write_bytes(bytes(range(256)) * 4096)
    build_manifest(web_dir)
    upload_dir = tmp_path / "uploads"
    secret = upload_tokens.load_secret(tmp_path / "state")
    metrics = FactoryMetrics()
    server = serve(
        WebArea(web_dir),
        upload_dir,
        secret,
        listen="127.0.0.1:0",
        max_upload_size=MAX_UPLOAD,
        metrics=metrics,
    )
    try:
        yield Factory(server, web_dir, upload_dir, secret, metrics)
    finally:
        server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def raw_request(
    factory: Factory,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> int:
    """Send `path` byte for byte (requests/urllib3 would normalise dot segments away)."""
    conn = http.client.HTTPConnection("127.0.0.1", factory.server.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


# --- pilot files ----------------------------------------------------------------------------


def test_health_check_answers_ok(factory: Factory) -> None:
    response = requests.get(f"{factory.url}/healthz", timeout=TIMEOUT)
    assert response.json() == {"status": "ok"}


def test_every_served_file_hashes_to_its_manifest_entry(factory: Factory) -> None:
    manifest = requests.get(f"{factory.url}/web/manifest.json", timeout=TIMEOUT).json()
    assert manifest == read_manifest(factory.web_dir)
    for name, digest in manifest.items():
        response = requests.get(f"{factory.url}/web/{name}", timeout=TIMEOUT)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == digest
        assert response.headers["ETag"] == f'"{digest}"'


def test_a_client_holding_the_current_file_gets_304(factory: Factory) -> None:
    digest = read_manifest(factory.web_dir)["condor.tar.gz"]
    response = requests.get(
        f"{factory.url}/web/condor.tar.gz", headers={"If-None-Match": f'"{digest}"'}, timeout=10
    )
    assert response.status_code == 304
    assert response.content == b""


@pytest.mark.parametrize("path", ["/web/", "/web", "/web/nothing.sh", "/web/.hidden"])
def test_no_listing_and_no_unlisted_files(factory: Factory, path: str) -> None:
    (factory.web_dir / "nothing.sh").write_text("added after the manifest\n")
    assert requests.get(f"{factory.url}{path}", timeout=TIMEOUT).status_code == 404


def test_a_file_tampered_after_the_manifest_is_refused_with_409_and_logged(
    factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    path = factory.web_dir / "glidein_startup.sh"
    path.write_bytes(path.read_bytes().replace(b"starting", b"stealing"))
    with caplog.at_level(logging.ERROR, logger="gwms.factory.web"):
        response = requests.get(f"{factory.url}/web/glidein_startup.sh", timeout=TIMEOUT)
    assert response.status_code == 409
    assert b"stealing" not in response.content
    assert "glidein_startup.sh now has sha256" in caplog.text
    assert factory.metric("gwms_factory_errors_total", kind="web_file_changed") == 1
    build_manifest(factory.web_dir)  # the operator accepts the change
    response = requests.get(f"{factory.url}/web/glidein_startup.sh", timeout=TIMEOUT)
    assert response.status_code == 200
    assert b"stealing" in response.content


# --- log uploads ----------------------------------------------------------------------------


def test_an_upload_with_the_batch_token_is_stored_gzipped(factory: Factory) -> None:
    body = b"condor_startd exited 0\n" * 100
    response = requests.put(
        factory.log_url(3, "startd.log"), data=body, headers=bearer(factory.token()), timeout=10
    )
    assert response.status_code == 201, response.text
    stored = factory.glidein_dir(3) / "startd.log.gz"
    assert gzip.decompress(stored.read_bytes()) == body
    assert stored.stat().st_mode & 0o077 == 0


def test_an_already_gzipped_upload_is_stored_as_sent(factory: Factory) -> None:
    body = gzip.compress(b"bootstrap log\n")
    response = requests.post(
        factory.log_url(0, "bootstrap.log.gz"),
        data=body,
        headers=bearer(factory.token()),
        timeout=TIMEOUT,
    )
    assert response.status_code == 201
    assert (factory.glidein_dir(0) / "bootstrap.log.gz").read_bytes() == body


def test_a_reupload_replaces_the_file_and_leaves_no_temporaries(factory: Factory) -> None:
    for text in (b"first\n", b"second, longer\n"):
        response = requests.put(
            factory.log_url(1, "pilot.log"), data=text, headers=bearer(factory.token()), timeout=10
        )
        assert response.status_code == 201
    assert [p.name for p in factory.stored_files()] == ["pilot.log.gz"]
    assert gzip.decompress((factory.glidein_dir(1) / "pilot.log.gz").read_bytes()) == (
        b"second, longer\n"
    )


@pytest.mark.parametrize(
    ("make_headers", "status"),
    [
        (lambda f: {}, 401),
        (lambda f: {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        (lambda f: bearer("gwu1.not.valid"), 401),
        (
            lambda f: bearer(upload_tokens.issue(bytes(32), ENTRY, CLIENT, BATCH, 4102444800)),
            401,
        ),
        (lambda f: bearer(f.token(expires_in=-1)), 401),
        (lambda f: bearer(f.token(batch="gl-20261122-000002-ffffff")), 403),
    ],
    ids=["none", "basic", "garbage", "other-secret", "expired", "other-batch"],
)
def test_uploads_without_a_valid_token_for_this_batch_are_refused(
    factory: Factory, make_headers, status: int
) -> None:
    response = requests.put(
        factory.log_url(0, "x.log"), data=b"x", headers=make_headers(factory), timeout=TIMEOUT
    )
    assert response.status_code == status
    assert factory.stored_files() == []
    reason = "forbidden" if status == 403 else "unauthorized"
    assert factory.metric("gwms_factory_uploads_rejected_total", reason=reason) == 1


def test_an_oversize_upload_is_refused_with_413_and_nothing_stored(factory: Factory) -> None:
    response = requests.put(
        factory.log_url(0, "big.log"),
        data=b"x" * (MAX_UPLOAD + 1),
        headers=bearer(factory.token()),
        timeout=TIMEOUT,
    )
    assert response.status_code == 413
    assert factory.stored_files() == []


def test_an_oversize_chunked_upload_is_cut_off_as_it_streams(factory: Factory) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"y" * (MAX_UPLOAD // 4)

    response = requests.put(
        factory.log_url(0, "big.log"), data=chunks(), headers=bearer(factory.token()), timeout=10
    )
    assert response.status_code == 413
    assert factory.stored_files() == [], "no partial or temporary file remains"
    assert factory.metric("gwms_factory_uploads_rejected_total", reason="too_large") == 1


class EndlessBody(io.RawIOBase):
    """A request body that never ends, counting what the app read of it."""

    def __init__(self) -> None:
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        buffer[:] = b"z" * len(buffer)
        self.consumed += len(buffer)
        return len(buffer)


def test_a_body_without_length_is_cut_off_as_it_streams(tmp_path: Path) -> None:
    """waitress always knows the length; other WSGI servers may pass chunked bodies through."""
    web_dir = tmp_path / "web"
    web_dir.mkdir()
    build_manifest(web_dir)
    secret = bytes(32)
    app = create_app(WebArea(web_dir), tmp_path / "uploads", secret, MAX_UPLOAD)
    token = upload_tokens.issue(secret, ENTRY, CLIENT, BATCH, int(time.time() + 60))
    environ = EnvironBuilder(
        path=f"/logs/{ENTRY}/{CLIENT}/{BATCH}/0/endless.log", method="PUT", headers=bearer(token)
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    body = EndlessBody()
    environ.update({"wsgi.input": body, "wsgi.input_terminated": True})
    _, status, _ = run_wsgi_app(app, environ)
    assert status.startswith("413")
    assert body.consumed <= 2 * MAX_UPLOAD, "it stopped reading soon after the cap"
    assert [p.name for p in (tmp_path / "uploads").rglob("*")] == []


def test_a_body_declared_far_too_large_is_refused_before_it_is_sent(factory: Factory) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", factory.server.port, timeout=TIMEOUT)
    try:
        conn.putrequest("PUT", f"/logs/{ENTRY}/{CLIENT}/{BATCH}/0/huge.log")
        conn.putheader("Authorization", f"Bearer {factory.token()}")
        conn.putheader("Content-Length", str(10**9))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    assert factory.stored_files() == []


@pytest.mark.parametrize(
    "path",
    [
        f"/logs/{ENTRY}/{CLIENT}/{BATCH}/0/..",
        f"/logs/{ENTRY}/{CLIENT}/{BATCH}/0/%2e%2e",
        f"/logs/{ENTRY}/{CLIENT}/{BATCH}/0/..%2F..%2F..%2Fescaped.log",
        f"/logs/{ENTRY}/{CLIENT}/{BATCH}/0/a%2Fb.log",
        f"/logs/{ENTRY}/{CLIENT}/{BATCH}/0/.hidden",
        f"/logs/{ENTRY}/{CLIENT}/{BATCH}/../../escaped.log",
        f"/logs/{ENTRY}/{CLIENT}/..%2F..%2F{BATCH}/0/escaped.log",
        f"/logs/{ENTRY}/{CLIENT}/{BATCH}/-1/escaped.log",
        f"/logs/{ENTRY}/..%5C..%5C/{BATCH}/0/escaped.log",
    ],
)
def test_path_traversal_attempts_are_refused_and_write_nothing(
    factory: Factory, tmp_path: Path, path: str
) -> None:
    before = sorted(tmp_path.rglob("*"))
    status = raw_request(factory, "PUT", path, b"pwned", bearer(factory.token()))
    assert status in (400, 404)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "path", ["/web/..%2Fuploads", "/web/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/web/../state"]
)
def test_pilot_file_paths_cannot_leave_the_web_area(factory: Factory, path: str) -> None:
    assert raw_request(factory, "GET", path) == 404


# --- status reports -------------------------------------------------------------------------


def test_status_reports_round_trip_to_latest_status(factory: Factory) -> None:
    url = f"{status_url(factory.url, ENTRY, CLIENT, BATCH)}/2"
    reports = [
        {"stage": "fetch", "message": "pilot files fetched", "timestamps": {"boot": 1795000000}},
        {"stage": "pilot_exited", "exit_code": 0, "time": 1795000100, "unknown": "dropped"},
    ]
    assert latest_status(factory.upload_dir, ENTRY, CLIENT, f"{BATCH}.2") is None
    for report in reports:
        response = requests.post(url, json=report, headers=bearer(factory.token()), timeout=10)
        assert response.status_code == 201, response.text
    latest = latest_status(factory.upload_dir, ENTRY, CLIENT, f"{BATCH}.2")
    assert latest is not None
    assert latest["stage"] == "pilot_exited"
    assert latest["exit_code"] == 0
    assert latest["time"] == 1795000100, "the VM's own clock is kept beside received_at"
    assert latest["glidein_id"] == f"{BATCH}.2"
    assert abs(latest["received_at"] - time.time()) < 60
    assert "unknown" not in latest
    lines = (factory.glidein_dir(2) / "status.jsonl").read_text().splitlines()
    assert [json.loads(line)["stage"] for line in lines] == ["fetch", "pilot_exited"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"message": "no stage"}',
        b'{"stage": "x", "exit_code": "0"}',
        b'{"stage": "x", "time": "now"}',
        b'{"stage": "../x"}',
    ],
    ids=["syntax", "not-object", "no-stage", "exit-code-string", "time-string", "odd-stage"],
)
def test_malformed_status_reports_are_refused_with_400(factory: Factory, body: bytes) -> None:
    response = requests.post(
        f"{status_url(factory.url, ENTRY, CLIENT, BATCH)}/0",
        data=body,
        headers={**bearer(factory.token()), "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert latest_status(factory.upload_dir, ENTRY, CLIENT, f"{BATCH}.0") is None


def test_status_reports_need_the_batch_token(factory: Factory) -> None:
    url = f"{status_url(factory.url, ENTRY, CLIENT, BATCH)}/0"
    other = factory.token(batch="gl-other")
    assert requests.post(url, json={"stage": "x"}, timeout=TIMEOUT).status_code == 401
    assert (
        requests.post(url, json={"stage": "x"}, headers=bearer(other), timeout=10).status_code
        == 403
    )


# --- metrics, logs, lifecycle ---------------------------------------------------------------


def test_metrics_count_accepted_uploads_and_bytes(factory: Factory) -> None:
    labels = {"entry": ENTRY, "kind": "log"}
    assert factory.metric("gwms_factory_uploads_accepted_total", **labels) == 0
    for _ in range(2):
        requests.put(
            factory.log_url(0, "a.log"),
            data=b"z" * 1000,
            headers=bearer(factory.token()),
            timeout=10,
        )
    assert factory.metric("gwms_factory_uploads_accepted_total", **labels) == 2
    assert factory.metric("gwms_factory_upload_bytes_total", entry=ENTRY) == 2000
    factory.metrics.cloud_call("aws-east", "RunInstances", "ok")
    assert (
        factory.metric(
            "gwms_factory_cloud_calls_total", cloud="aws-east", api="RunInstances", outcome="ok"
        )
        == 1
    )


def test_request_logs_name_the_glidein_and_never_the_token(
    factory: Factory, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    good = factory.token()
    other = factory.token(batch="gl-other")
    expired = factory.token(expires_in=-5)
    with caplog.at_level(logging.DEBUG):
        requests.put(factory.log_url(4, "a.log"), data=b"a", headers=bearer(good), timeout=10)
        requests.put(factory.log_url(4, "a.log"), data=b"a", headers=bearer(other), timeout=10)
        requests.put(factory.log_url(4, "a.log"), data=b"a", headers=bearer(expired), timeout=10)
        requests.put(
            factory.log_url(4, "a.log"),
            data=b"x" * (MAX_UPLOAD + 1),
            headers=bearer(good),
            timeout=10,
        )
        requests.post(
            f"{status_url(factory.url, ENTRY, CLIENT, BATCH)}/4",
            json={"stage": "running"},
            headers=bearer(good),
            timeout=TIMEOUT,
        )
        raw_request(factory, "PUT", f"/logs/{ENTRY}/{CLIENT}/{BATCH}/4/..", b"", bearer(good))
    out, err = capfd.readouterr()
    captured = caplog.text + out + err
    for token in (good, other, expired):
        assert token not in captured
        assert token.split(".")[2] not in captured, "not even the signature part"
    lines = [r.getMessage() for r in caplog.records if r.name == "gwms.factory.web"]
    assert len(lines) == 6, "one line per request"
    assert all(f"entry={ENTRY} client={CLIENT} glidein={BATCH}.4" in line for line in lines)


def test_stop_closes_the_port_and_ends_the_server_thread(tmp_path: Path) -> None:
    web_dir = tmp_path / "web"
    web_dir.mkdir()
    build_manifest(web_dir)
    server = serve(
        WebArea(web_dir), tmp_path / "up", bytes(32), listen="127.0.0.1:0", max_upload_size=10
    )
    session = requests.Session()  # a kept-alive connection must not hold the stop up
    assert session.get(f"{server.url}/healthz", timeout=TIMEOUT).ok
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    assert not server._thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/healthz", timeout=TIMEOUT)
    server.stop()  # a second stop is harmless


def test_a_server_stopped_before_starting_releases_its_port(tmp_path: Path) -> None:
    app = create_app(WebArea(tmp_path), tmp_path / "up", bytes(32), 10)
    server = WebServer(app, "127.0.0.1:0")
    server.stop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", server.port))  # would raise EADDRINUSE if still bound
