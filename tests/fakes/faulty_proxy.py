"""An HTTP reverse proxy on 127.0.0.1 that forwards to a real server and injects faults.

Put it between a cloud client and its server (moto_server, the OpenStack fake) to make the
cloud misbehave on cue: N throttling answers (EC2's XML `RequestLimitExceeded` with HTTP
503), N plain 5xx, delays, or an answer lost after the request was carried out (the
"outcome unknown" case). It counts requests per action (EC2/STS `Action=` from the form
body or query, else `METHOD /path`) and records each one, with its headers and arrival
time, so tests can check what reached the wire.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


def ec2_error_body(code: str, message: str) -> bytes:
    """An EC2 query-API error document, as AWS sends it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        f"</Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


@dataclass
class Fault:
    """A misbehaviour for requests of `action` (None = any), `times` times (-1 = always).

    kind: "status" answers `status` with `body` instead of forwarding; "delay" waits
    `delay` seconds, then forwards; "lose_answer" forwards, then closes the connection
    without answering (the server did the work, the client cannot know).
    """

    kind: str
    action: str | None = None
    times: int = 1
    status: int = 503
    body: bytes = b""
    content_type: str = "text/xml"
    delay: float = 0.0

    def matches(self, action: str) -> bool:
        return self.times != 0 and (self.action is None or self.action == action)


def throttle(action: str | None = None, times: int = 1) -> Fault:
    """EC2 throttling: HTTP 503 with a `RequestLimitExceeded` error document."""
    body = ec2_error_body("RequestLimitExceeded", "Request limit exceeded.")
    return Fault("status", action, times, 503, body)


def unavailable(action: str | None = None, times: int = 1) -> Fault:
    """A plain 503 Service Unavailable (an overloaded or restarting endpoint)."""
    body = ec2_error_body("Unavailable", "The server is overloaded or under maintenance.")
    return Fault("status", action, times, 503, body)


@dataclass(frozen=True)
class Seen:
    """One request as the proxy received it."""

    action: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival
    faulted: str | None  # the fault kind applied, if any


class FaultyProxy:
    """The proxy server; `url` replaces the target's URL in the client under test."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        if parts.hostname is None:
            raise ValueError(f"target {target!r} has no host")
        self.target_host = parts.hostname
        self.target_port = parts.port or 80
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.counts: Counter[str] = Counter()  # requests received, per action
        self.forwarded: Counter[str] = Counter()  # requests that reached the target
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        """Drop pending faults and forget what was seen."""
        with self._lock:
            self._faults.clear()
            self.seen.clear()
            self.counts.clear()
            self.forwarded.clear()

    def times_of(self, action: str) -> list[float]:
        """Arrival times of requests of `action` that reached the target."""
        with self._lock:
            return [s.at for s in self.seen if s.action == action and s.faulted in (None, "delay")]

    def start(self) -> FaultyProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- request handling ---

    def _take_fault(self, action: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(action):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)
            self.counts[seen.action] += 1
            if seen.faulted in (None, "delay", "lose_answer"):
                self.forwarded[seen.action] += 1

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes):
        connection = http.client.HTTPConnection(self.target_host, self.target_port, timeout=60)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                if name.lower() not in HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read `proxy.seen` instead."""

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = _action(self.command, self.path, self.headers, body)
                fault = proxy._take_fault(action)
                headers = {name: value for name, value in self.headers.items()}
                proxy._record(
                    Seen(action, self.command, self.path, headers, body, time.monotonic(),
                         fault.kind if fault else None)
                )  # fmt: skip
                if fault is not None and fault.kind == "status":
                    self._answer(fault.status, [("Content-Type", fault.content_type)], fault.body)
                    return
                if fault is not None and fault.kind == "delay":
                    time.sleep(fault.delay)
                status, answer_headers, answer = proxy._forward(
                    self.command, self.path, headers, body
                )
                if fault is not None and fault.kind == "lose_answer":
                    self.close_connection = True
                    return
                self._answer(status, answer_headers, answer)

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and name.lower() not in {"server", "date"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler


def form(seen: Seen) -> dict[str, str]:
    """The form-encoded parameters of an EC2/STS query request (first value of each)."""
    return {key: values[0] for key, values in parse_qs(seen.body.decode()).items()}


def _action(method: str, path: str, headers: object, body: bytes) -> str:
    """EC2/STS query action from the query string or form body, else `METHOD /path`."""
    parts = urlsplit(path)
    query = parse_qs(parts.query)
    if "Action" in query:
        return query["Action"][0]
    content_type = str(getattr(headers, "get", lambda *_: "")("Content-Type") or "")
    if body and "application/x-www-form-urlencoded" in content_type:
        form = parse_qs(body.decode("utf-8", "replace"))
        if "Action" in form:
            return form["Action"][0]
    return f"{method} {parts.path}"


@contextmanager
def faulty_proxy(target: str) -> Iterator[FaultyProxy]:
    """A started proxy in front of `target`, shut down on exit."""
    proxy = FaultyProxy(target).start()
    try:
        yield proxy
    finally:
        proxy.stop()
