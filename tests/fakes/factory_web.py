"""A tiny stand-in for the factory web service, on 127.0.0.1, for the VM-side tests.

Same routes as `gwms.factory.web`: `GET /web/<name>` serves files from a dict,
`PUT /logs/<entry>/<client>/<batch>/<index>/<file>` and
`POST /status/<entry>/<client>/<batch>/<index>` need `Authorization: Bearer <token>` and are
recorded (uploads gunzipped for the assertions). Nothing else: no manifest, no metrics.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from cryptography.hazmat.primitives import serialization

from gwms.credentials.proxy import create_proxy
from gwms.credentials.testca import make_ca, make_user_cert


@dataclass
class FactoryWeb:
    """Serve `files` under /web; accept logs and status for one batch with `token`."""

    token: str
    files: dict[str, bytes] = field(default_factory=dict)
    entry: str = "entry_a"
    client: str = "vo1-frontend.main"
    batch: str = "gl-batch-1"
    uploads: dict[str, bytes] = field(default_factory=dict)  # "<index>/<file>" -> gunzipped
    statuses: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def web_base(self) -> str:
        return f"{self.url}/web"

    @property
    def log_url(self) -> str:
        return f"{self.url}/logs/{self.entry}/{self.client}/{self.batch}"

    def sha256s(self) -> dict[str, str]:
        return {name: hashlib.sha256(body).hexdigest() for name, body in self.files.items()}

    def stages(self) -> list[str]:
        return [status["stage"] for status in self.statuses]

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.owner = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def owner(self) -> FactoryWeb:
        return self.server.owner  # type: ignore[attr-defined]

    def _reply(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.owner.token}":
            return True
        self.owner.refused.append(self.path)
        return False

    def do_GET(self) -> None:
        self.owner.requests.append(("GET", self.path))
        name = self.path.removeprefix("/web/")
        if self.path.startswith("/web/") and name in self.owner.files:
            self._reply(200, self.owner.files[name], "application/octet-stream")
        else:
            self._reply(404, b"not found\n")

    def do_PUT(self) -> None:
        self.owner.requests.append(("PUT", self.path))
        body = self._body()
        prefix = self.owner.log_url.removeprefix(self.owner.url) + "/"
        if not self.path.startswith(prefix):
            self._reply(404, b"not found\n")
        elif not self._authorized():
            self._reply(401, b"bad token\n")
        else:
            key = self.path.removeprefix(prefix)
            self.owner.uploads[key] = gzip.decompress(body)
            self._reply(200, b"{}", "application/json")

    def do_POST(self) -> None:
        self.owner.requests.append(("POST", self.path))
        body = self._body()
        owner = self.owner
        prefix = f"/status/{owner.entry}/{owner.client}/{owner.batch}/"
        if not self.path.startswith(prefix):
            self._reply(404, b"not found\n")
        elif not self._authorized():
            self._reply(401, b"bad token\n")
        else:
            report = json.loads(body)
            report["launch_index"] = int(self.path.removeprefix(prefix))
            owner.statuses.append(report)
            self._reply(200, b"{}", "application/json")

    def log_message(self, format: str, *args: object) -> None:
        pass


# --- UserData for the VM-side tests ------------------------------------------------------


@functools.cache
def _user_credential() -> tuple[Any, Any]:
    ca_cert, ca_key = make_ca("gwms-cloud bootstrap test CA")
    return make_user_cert(ca_cert, ca_key, "bootstrap test pilot", hours=72)


@functools.cache
def proxy_pem(hours: float = 12) -> str:
    """A real RFC 3820 proxy chain (cert, key, user cert) valid for `hours`."""
    cert, key = _user_credential()
    return create_proxy(cert, key, hours=hours).to_pem().decode()


@functools.cache
def expired_cert_pem() -> str:
    """A certificate chain (with key) that expired an hour ago."""
    ca_cert, ca_key = make_ca("gwms-cloud expired CA")
    start = datetime.now(UTC) - timedelta(hours=3)
    cert, key = make_user_cert(ca_cert, ca_key, "expired pilot", hours=2, not_before=start)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return (cert.public_bytes(serialization.Encoding.PEM) + key_pem).decode()


def glidein_document(web: FactoryWeb, **overrides: Any) -> dict[str, Any]:
    """A valid UserData v1 document pointing at `web` (files hashed as served now)."""
    document: dict[str, Any] = {
        "version": 1,
        "factory": "gfactory-test",
        "entry": web.entry,
        "client": web.client,
        "glidein_id": web.batch,
        "issued_at": int(time.time()),
        "web_base": web.web_base,
        "files": web.sha256s(),
        "pilot_args": ["-collector", "127.0.0.1:9618"],
        "lifetimes": {"max_seconds": 3600, "retire_seconds": 3000},
        "log_upload": {"url": web.log_url, "token": web.token},
        "credentials": {"x509_proxy": proxy_pem(), "idtoken": None},
    }
    document.update(overrides)
    return document
