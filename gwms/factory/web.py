"""The factory web service (Flask on waitress): pilot files out, glidein logs and status in.

Routes (docs/factory-web.md):
- GET /web/<name>, GET /web/manifest.json: pilot files, only as the manifest lists them.
- PUT|POST /logs/<entry>/<client>/<batch>/<index>/<file>: a log, stored gzipped.
- POST /status/<entry>/<client>/<batch>/<index>: a bootstrap status report (JSON).
- GET /metrics (Prometheus), GET /healthz.
Uploads carry `Authorization: Bearer <token>`, the per-batch token from the UserData
(gwms.factory.upload_tokens). One log line per request names the entry, client and
glidein; the token is never logged.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import wrap_file

from gwms.errors import ConfigError
from gwms.factory import upload_tokens
from gwms.factory.metrics import CONTENT_TYPE, FactoryMetrics
from gwms.factory.webarea import MANIFEST, FileChangedError, WebArea, WebAreaError, is_plain_name

log = logging.getLogger("gwms.factory.web")

STATUS_FILE = "status.jsonl"
MAX_STATUS_SIZE = 16 * 1024  # one report; the bootstrap sends a few hundred bytes
MAX_STATUS_FILE = 1024 * 1024  # then status.jsonl is rotated to status.jsonl.1
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 64 * 1024
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_INDEX = re.compile(r"[0-9]{1,6}")
_STAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_MESSAGE = 4096
_MAX_TIMESTAMPS = 32


class Refusal(Exception):
    """A request the service refuses: HTTP status, a one-line reason, and the metric reason."""

    def __init__(self, status: int, reason: str, metric: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.metric = metric


@dataclass(frozen=True)
class Glidein:
    """Where an upload belongs, from its URL (validated plain names)."""

    entry: str
    client: str
    batch_id: str
    launch_index: int

    @property
    def glidein_id(self) -> str:
        return f"{self.batch_id}.{self.launch_index}"


def create_app(
    web_area: WebArea,
    upload_dir: Path,
    secret: bytes,
    max_upload_size: int,
    metrics: FactoryMetrics | None = None,
) -> Flask:
    """The WSGI app; `secret` verifies upload tokens, `metrics` is shared with the daemon."""
    metrics = metrics if metrics is not None else FactoryMetrics()
    status_lock = threading.Lock()
    app = Flask("gwms.factory.web")
    app.config["MAX_CONTENT_LENGTH"] = None  # each upload route enforces its own cap

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    @app.get(f"/web/{MANIFEST}")
    def manifest() -> Response:
        response = Response(web_area.manifest_bytes(), mimetype="application/json")
        response.cache_control.no_cache = True
        response.add_etag()
        return response.make_conditional(request)

    @app.get("/web/<name>")
    def pilot_file(name: str) -> Response:
        g.log_fields = f"file={name}" if is_plain_name(name) else ""
        opened = web_area.open(name)
        if opened is None:
            raise Refusal(404, f"no pilot file {name!r} in the manifest")
        response = Response(
            wrap_file(request.environ, opened.handle),
            mimetype="application/octet-stream",
            direct_passthrough=True,
        )
        response.content_length = opened.size
        response.set_etag(opened.sha256)
        response.cache_control.no_cache = True
        metrics.file_served(name)
        return response.make_conditional(request)

    @app.route(
        "/logs/<entry>/<client>/<batch_id>/<launch_index>/<filename>", methods=["PUT", "POST"]
    )
    def upload_log(
        entry: str, client: str, batch_id: str, launch_index: str, filename: str
    ) -> tuple[Response, int]:
        glidein = _glidein(entry, client, batch_id, launch_index)
        if not is_plain_name(filename):
            raise Refusal(
                400, "the file name must be a plain name (letters, digits, ._+-)", "bad_name"
            )
        g.log_fields += f" file={filename}"
        _authorize(secret, glidein)
        length = request.content_length
        if length is not None and length > max_upload_size:
            raise Refusal(413, f"upload larger than {max_upload_size} bytes", "too_large")
        stored, received = _store_log(
            request.stream, upload_dir, glidein, filename, max_upload_size
        )
        g.log_fields += f" bytes={received}"
        metrics.upload_accepted(glidein.entry, "log", received)
        return jsonify(stored=stored, bytes=received), 201

    @app.post("/status/<entry>/<client>/<batch_id>/<launch_index>")
    def status_report(
        entry: str, client: str, batch_id: str, launch_index: str
    ) -> tuple[Response, int]:
        glidein = _glidein(entry, client, batch_id, launch_index)
        _authorize(secret, glidein)
        length = request.content_length
        if length is not None and length > MAX_STATUS_SIZE:
            raise Refusal(413, f"status report larger than {MAX_STATUS_SIZE} bytes", "too_large")
        body = b"".join(_capped_chunks(request.stream, MAX_STATUS_SIZE))
        record = _status_record(body, glidein)
        g.log_fields += f" stage={record['stage']}"
        with status_lock:
            _append_status(_glidein_dir(upload_dir, glidein), record)
        metrics.upload_accepted(glidein.entry, "status", len(body))
        return jsonify(recorded=True), 201

    _register_handlers(app, metrics)
    return app


def _register_handlers(app: Flask, metrics: FactoryMetrics) -> None:
    """Refusals become JSON {"error": ...}; every request gets one log line."""

    @app.before_request
    def start() -> None:
        g.log_fields = ""

    @app.errorhandler(Refusal)
    def refused(exc: Refusal) -> tuple[Response, int]:
        if exc.metric is not None:
            metrics.upload_rejected(exc.metric)
        return jsonify(error=str(exc)), exc.status

    @app.errorhandler(FileChangedError)
    def changed(exc: FileChangedError) -> tuple[Response, int]:
        log.error("%s", exc)
        metrics.error("web_file_changed")
        return jsonify(error=f"pilot file {exc.name} does not match the manifest"), 409

    @app.errorhandler(WebAreaError)
    def no_web_area(exc: WebAreaError) -> tuple[Response, int]:
        log.error("%s", exc)
        metrics.error("web_area")
        return jsonify(error="the factory web area is not available; see the factory log"), 503

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> tuple[Response, int]:
        log.exception("internal error on %s %s", request.method, _shown(request.path))
        metrics.error("web_internal")
        if request.path.startswith(("/logs/", "/status/")):
            metrics.upload_rejected("internal")
        return jsonify(error="internal error in the factory web service; see its log"), 500

    @app.after_request
    def log_request(response: Response) -> Response:
        quiet = request.path in ("/healthz", "/metrics")
        level = (
            logging.WARNING
            if response.status_code >= 400
            else logging.DEBUG
            if quiet
            else logging.INFO
        )
        log.log(
            level,
            "%s %s %d %s",
            request.method,
            _shown(request.path),
            response.status_code,
            g.get("log_fields", "").strip() or "-",
        )
        return response


def _shown(path: str) -> str:
    """A request path safe for one log line (no control characters, bounded)."""
    return ascii(path[:200])[1:-1]


def _glidein(entry: str, client: str, batch_id: str, launch_index: str) -> Glidein:
    for value in (entry, client, batch_id):
        if not _ID.fullmatch(value) or ".." in value:
            raise Refusal(
                400,
                "entry, client and batch id must be plain names (letters, digits, ._@+-)",
                "bad_name",
            )
    if not _INDEX.fullmatch(launch_index):
        raise Refusal(400, "the launch index must be a non-negative integer", "bad_name")
    glidein = Glidein(entry, client, batch_id, int(launch_index))
    g.log_fields = f"entry={entry} client={client} glidein={glidein.glidein_id}"
    return glidein


def _authorize(secret: bytes, glidein: Glidein) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Refusal(
            401, "missing bearer token; send the upload token from the UserData", "unauthorized"
        )
    verdict = upload_tokens.check(
        secret, token, glidein.entry, glidein.client, glidein.batch_id, time.time()
    )
    if verdict is upload_tokens.TokenCheck.OTHER_BATCH:
        raise Refusal(403, "the upload token was issued for another glidein batch", "forbidden")
    if verdict is not upload_tokens.TokenCheck.VALID:
        raise Refusal(401, f"upload token rejected ({verdict.value})", "unauthorized")


def _glidein_dir(upload_dir: Path, glidein: Glidein) -> Path:
    directory = upload_dir / glidein.entry / glidein.client / glidein.glidein_id
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    return directory


def _store_log(
    stream: IO[bytes], upload_dir: Path, glidein: Glidein, filename: str, limit: int
) -> tuple[str, int]:
    """Stream the body into a temp file (gzipping it unless it already is), then rename it.

    Stops reading and refuses (413) as soon as more than `limit` bytes arrived, so an
    oversize body never lands (not even its directory); a re-upload of the same name
    replaces the file atomically.
    """
    chunks = _capped_chunks(stream, limit)
    first = b""
    for chunk in chunks:  # enough of the body to see the gzip magic
        first += chunk
        if len(first) >= len(GZIP_MAGIC):
            break
    gzipped = first.startswith(GZIP_MAGIC)
    stored = filename if filename.endswith(".gz") else f"{filename}.gz"
    upload_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=upload_dir, prefix=".upload-")  # 0600: logs may be private
    try:
        with os.fdopen(fd, "wb") as raw:
            if gzipped:
                received = _write_all(raw, first, chunks)
            else:
                with gzip.GzipFile(filename=filename, mode="wb", fileobj=raw) as packed:
                    received = _write_all(packed, first, chunks)
        os.replace(tmp, _glidein_dir(upload_dir, glidein) / stored)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return stored, received


def _write_all(out: IO[bytes], first: bytes, chunks: Iterator[bytes]) -> int:
    out.write(first)
    received = len(first)
    for chunk in chunks:
        received += len(chunk)
        out.write(chunk)
    return received


def _capped_chunks(stream: IO[bytes], limit: int) -> Iterator[bytes]:
    total = 0
    while chunk := stream.read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise Refusal(413, f"upload larger than {limit} bytes", "too_large")
        yield chunk


def _status_record(body: bytes, glidein: Glidein) -> dict[str, Any]:
    """Validate a status report; unknown fields are dropped so old factories accept new VMs."""
    try:
        report = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        report = None
    if not isinstance(report, dict):
        raise Refusal(400, "the status report must be a JSON object", "bad_body")
    stage = report.get("stage")
    if not isinstance(stage, str) or not _STAGE.fullmatch(stage):
        raise Refusal(400, "stage must be a short name (letters, digits, ._-)", "bad_body")
    record: dict[str, Any] = {
        "received_at": int(time.time()),
        "glidein_id": glidein.glidein_id,
        "stage": stage,
    }
    message = report.get("message")
    if message is not None:
        if not isinstance(message, str):
            raise Refusal(400, "message must be a string", "bad_body")
        record["message"] = message[:_MAX_MESSAGE]
    if "exit_code" in report:
        code = report["exit_code"]
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise Refusal(400, "exit_code must be an integer or null", "bad_body")
        record["exit_code"] = code
    sent = report.get("time")
    if sent is not None:
        if type(sent) is not int:
            raise Refusal(400, "time must be integer epoch seconds", "bad_body")
        record["time"] = sent
    stamps = report.get("timestamps", {})
    valid = isinstance(stamps, dict) and len(stamps) <= _MAX_TIMESTAMPS
    valid = valid and all(
        isinstance(k, str) and _STAGE.fullmatch(k) and type(v) is int for k, v in stamps.items()
    )
    if not valid:
        raise Refusal(
            400,
            "timestamps must map short names to integer epoch seconds (at most 32)",
            "bad_body",
        )
    record["timestamps"] = stamps
    return record


def _append_status(directory: Path, record: dict[str, Any]) -> None:
    path = directory / STATUS_FILE
    try:
        if path.stat().st_size > MAX_STATUS_FILE:
            os.replace(path, path.with_name(STATUS_FILE + ".1"))
    except FileNotFoundError:
        pass
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)  # one write of a whole line: readers never see half a record
    finally:
        os.close(fd)


def latest_status(
    upload_dir: Path, entry: str, client: str, glidein_id: str
) -> dict[str, Any] | None:
    """The last status report of one glidein (`<batch>.<index>`), or None if it sent none."""
    directory = upload_dir / entry / client / glidein_id
    for name in (STATUS_FILE, STATUS_FILE + ".1"):
        record = _last_record(directory / name)
        if record is not None:
            return record
    return None


def _last_record(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 2 * MAX_STATUS_SIZE))
            tail = handle.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            return record
    return None


def pilot_files_url(base_url: str) -> str:
    """The UserData `web_base`: where VMs fetch `<web_base>/<name>` pilot files."""
    return f"{base_url.rstrip('/')}/web"


def log_upload_url(base_url: str, entry: str, client: str, batch_id: str) -> str:
    """The UserData `log_upload.url` of a batch; VMs append `/<launch index>/<file name>`."""
    return f"{base_url.rstrip('/')}/logs/{entry}/{client}/{batch_id}"


def status_url(base_url: str, entry: str, client: str, batch_id: str) -> str:
    """Where a batch's VMs POST status; VMs append `/<launch index>` (also: log URL with
    `/logs/` replaced by `/status/`)."""
    return f"{base_url.rstrip('/')}/status/{entry}/{client}/{batch_id}"


# --- serving --------------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [addr]:port), with an error naming the bad value."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"web.listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8319).")
    return host, int(port)


class WebServer:
    """waitress serving the app from a background thread; `stop()` ends it cleanly.

    Stopping closes the listening socket first, lets in-flight requests finish (up to
    `grace` seconds), then closes every connection and the worker threads.
    """

    def __init__(
        self, app: Flask, listen: str, *, threads: int = 4, max_body: int = 1 << 30
    ) -> None:
        from waitress import create_server
        from waitress.server import BaseWSGIServer

        host, port = parse_listen(listen)
        try:
            self._server: Any = create_server(
                app,
                host=host,
                port=port,
                threads=threads,
                ident="gwms-factory",
                max_request_body_size=max_body,
                clear_untrusted_proxy_headers=True,
            )
        except OSError as exc:
            raise ConfigError(
                f"web.listen {listen}: cannot listen there ({exc.strerror}); pick a free"
                " address and port."
            ) from exc
        # A host name that resolves to several addresses gives one listener per address.
        self._map: dict[int, Any] = getattr(self._server, "map", None) or self._server._map
        self._listeners = [s for s in self._map.values() if isinstance(s, BaseWSGIServer)]
        self.host = host
        self.port = int(self._listeners[0].effective_port)
        self._stopping = threading.Event()
        self._grace = 5.0
        self._thread = threading.Thread(target=self._run, name="factory-web", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> WebServer:
        self._thread.start()
        log.info("factory web service listening on %s", self.url)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop serving and wait for the server thread; safe to call twice, or unstarted."""
        if self._thread.ident is None:  # never started: just release the sockets
            self._stopping.set()
            self._run()
            return
        if not self._thread.is_alive():
            return
        self._grace = grace
        self._stopping.set()
        # Wake the loop so it sees the flag at once. The loop may already have seen it and
        # closed the trigger (EBADF): then there is nothing to wake, it polls every 0.5 s anyway.
        with contextlib.suppress(OSError):
            self._listeners[0].pull_trigger()
        self._thread.join(grace + 10)
        log.info("factory web service stopped")

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        from waitress import wasyncore

        socket_map = self._map
        while not self._stopping.is_set():
            wasyncore.loop(timeout=0.5, map=socket_map, use_poll=True, count=1)
        for listener in self._listeners:  # stop accepting; keep the trigger and connections
            wasyncore.dispatcher.close(listener)
        deadline = time.monotonic() + self._grace
        while time.monotonic() < deadline and _busy(socket_map):
            wasyncore.loop(timeout=0.1, map=socket_map, use_poll=True, count=1)
        self._listeners[0].task_dispatcher.shutdown()
        wasyncore.close_all(socket_map)


def _busy(socket_map: dict[int, Any]) -> bool:
    return any(
        getattr(channel, "requests", None) or getattr(channel, "total_outbufs_len", 0)
        for channel in list(socket_map.values())
    )


def serve(
    web_area: WebArea,
    upload_dir: Path,
    secret: bytes,
    *,
    listen: str,
    max_upload_size: int,
    metrics: FactoryMetrics | None = None,
    threads: int = 4,
) -> WebServer:
    """Build the app and start serving it in the background; call `.stop()` to end it.

    waitress spools request bodies to disk and refuses (413) bodies larger than the
    upload cap plus a little slack itself; the app enforces the exact cap as it streams.
    """
    app = create_app(web_area, upload_dir, secret, max_upload_size, metrics)
    max_body = max(max_upload_size, MAX_STATUS_SIZE) + 1024 * 1024
    return WebServer(app, listen, threads=threads, max_body=max_body).start()


__all__ = [
    "STATUS_FILE",
    "WebServer",
    "create_app",
    "latest_status",
    "log_upload_url",
    "parse_listen",
    "serve",
    "status_url",
]
