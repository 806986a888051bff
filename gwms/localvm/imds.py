"""An EC2 IMDS-compatible metadata server for ONE local instance, on 127.0.0.1.

Local "VMs" (and the demo) give each instance its own server so the real bootstrap fetches
its user data exactly as on EC2: IMDSv2 session tokens (PUT /latest/api/token with the TTL
header, token required by default, IMDSv1 only when allowed), /latest/user-data and the
meta-data keys the pilot reads. moto's metadata endpoint is static, hence this server.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

LOG = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"  # noqa: S105 (a URL path)
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)
MAX_TOKEN_TTL = 21600
SPOT_ACTIONS = ("hibernate", "stop", "terminate")


@dataclass(frozen=True)
class Request:
    """What a handler sees of one HTTP request (headers are case-insensitive)."""

    method: str
    path: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Reply:
    """What a handler answers; Content-Length is added by the server."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/plain"


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 that answers every request through `handle()`.

    `start()` binds (port 0 picks a free port) and serves in a daemon thread; `stop()` shuts
    it down and closes the socket. Subclasses implement `handle()`; long waits inside it
    should use `self.stopping.wait()` so that `stop()` is never held up.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.requested_port = port
        self.stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the server is already started")
        self.stopping.clear()
        server = ThreadingHTTPServer((self.host, self.requested_port), _Handler)
        server.daemon_threads = True
        server.owner = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name=f"{type(self).__name__}:{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gwms-localvm"
    sys_version = ""

    def _dispatch(self) -> None:
        owner: LoopbackServer = self.server.owner  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        try:
            reply = owner.handle(Request(self.command, path, self.headers))
        except Exception:
            LOG.exception("%s %s failed", self.command, path)
            reply = Reply(500, b"internal error\n")
        if owner.stopping.is_set():
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _dispatch

    def log_message(self, format: str, *args: object) -> None:
        # Paths only: bodies and token headers never reach the log.
        LOG.debug("%s - %s", self.address_string(), format % args)


class ImdsServer(LoopbackServer):
    """EC2 instance metadata of one instance. `url` is what to pass as --metadata-url.

    `require_token=True` behaves like an instance launched with HttpTokens=required
    (IMDSv2 only, the EC2 default for new instance types); False also answers IMDSv1 GETs.
    """

    def __init__(
        self,
        *,
        instance_id: str = "i-0123456789abcdef0",
        user_data: bytes | None = None,
        instance_type: str = "m5.large",
        availability_zone: str = "us-east-1a",
        launch_index: int = 0,
        require_token: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host, port)
        self.instance_id = instance_id
        self.user_data = user_data
        self.instance_type = instance_type
        self.availability_zone = availability_zone
        self.launch_index = launch_index
        self.require_token = require_token
        self.clock = clock
        self._tokens: dict[str, float] = {}  # token -> expiry on self.clock
        self._spot_action: bytes | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        # user_data carries credentials: never in a repr.
        return f"ImdsServer(instance_id={self.instance_id!r}, require_token={self.require_token})"

    def set_spot_action(self, action: str | None, when: datetime | None = None) -> None:
        """Announce a spot interruption (None withdraws it), as EC2 does 2 minutes ahead."""
        if action is None:
            self._spot_action = None
            return
        if action not in SPOT_ACTIONS:
            raise ValueError(f"spot action must be one of {', '.join(SPOT_ACTIONS)}")
        moment = (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._spot_action = json.dumps({"action": action, "time": moment}).encode()

    def revoke_tokens(self) -> None:
        """Forget every session token, as if they had expired: clients get 401 and renew."""
        with self._lock:
            self._tokens.clear()

    def meta_data(self) -> dict[str, bytes]:
        """The /latest/meta-data/ keys this instance serves."""
        keys = {
            "ami-launch-index": str(self.launch_index).encode(),
            "instance-id": self.instance_id.encode(),
            "instance-type": self.instance_type.encode(),
            "placement/availability-zone": self.availability_zone.encode(),
        }
        if self._spot_action is not None:
            keys["spot/instance-action"] = self._spot_action
        return keys

    def handle(self, request: Request) -> Reply:
        if request.path == TOKEN_PATH:
            if request.method != "PUT":
                return Reply(405, b"Method Not Allowed\n")
            return self._issue_token(request)
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"Method Not Allowed\n")
        if not self._authorized(request):
            return Reply(401, b"Unauthorized\n")
        body = self._lookup(request.path)
        if body is None:
            return Reply(404, b"Not Found\n", content_type="text/html")
        return Reply(200, body)

    def _issue_token(self, request: Request) -> Reply:
        if request.headers.get("X-Forwarded-For"):
            # Real IMDS refuses token requests that went through a proxy.
            return Reply(403, b"Forbidden\n")
        raw_ttl = request.headers.get(TTL_HEADER, "")
        try:
            ttl = int(raw_ttl)
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return Reply(400, b"Bad Request: missing or invalid TTL header\n")
        value = secrets.token_urlsafe(42)
        with self._lock:
            now = self.clock()
            self._tokens = {k: end for k, end in self._tokens.items() if end > now}
            self._tokens[value] = now + ttl
        return Reply(200, value.encode(), headers=((TTL_HEADER, str(ttl)),))

    def _authorized(self, request: Request) -> bool:
        token = request.headers.get(TOKEN_HEADER)
        if token is None:
            return not self.require_token
        return self._token_valid(token)

    def _token_valid(self, value: str) -> bool:
        with self._lock:
            expires = self._tokens.get(value)
            return expires is not None and expires > self.clock()

    def _lookup(self, path: str) -> bytes | None:
        if path == "/latest/user-data":
            return self.user_data
        keys = self.meta_data()
        if path == "/latest/":
            return b"meta-data\nuser-data" if self.user_data else b"meta-data"
        if not path.startswith("/latest/meta-data/"):
            return None
        key = path[len("/latest/meta-data/") :]
        if key in keys:
            return keys[key]
        return _listing(key, keys)


def _listing(prefix: str, keys: Mapping[str, bytes]) -> bytes | None:
    """IMDS directory listing: one entry per line, subdirectories with a trailing slash."""
    if prefix and not prefix.endswith("/"):
        return None
    entries: list[str] = []
    for key in keys:
        if not key.startswith(prefix):
            continue
        head, slash, _ = key[len(prefix) :].partition("/")
        entry = head + slash
        if entry not in entries:
            entries.append(entry)
    return "\n".join(entries).encode() if entries else None
