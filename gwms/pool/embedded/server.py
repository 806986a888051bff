"""HTTP API of the embedded collector + schedd (`gwms collector serve`): Flask on waitress.

Every request but /healthz carries `Authorization: Bearer <token>`; the identity that token
belongs to is stamped on each advertised ad as AuthenticatedIdentity, overwriting what the
client sent, which is what lets the factory trust which frontend wrote a request ad.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import classad2
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from gwms import classads
from gwms.errors import ConfigError
from gwms.pool.base import ConflictError, NotFoundError, PoolError
from gwms.pool.embedded.store import Store
from gwms.pool.embedded.tokens import TokenAuth

log = logging.getLogger("gwms.collector")

MAX_BODY = 64 * 1024 * 1024
PURGE_INTERVAL = 60.0
API = "/v1"


class RequestError(Exception):
    """A request the server refuses; carries the HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def create_app(store: Store, auth: TokenAuth | None) -> Flask:
    """The WSGI app; `auth` None means every caller is `anonymous@<peer address>`."""
    app = Flask("gwms.collector")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY

    @app.before_request
    def authenticate() -> None:
        if request.path == "/healthz":
            return
        if auth is None:
            g.identity = f"anonymous@{request.remote_addr}"
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        identity = auth.identify(token.strip()) if scheme.lower() == "bearer" and token else None
        if identity is None:
            raise RequestError(
                401,
                "missing or unknown bearer token; send the token that "
                "`gwms collector add-token` printed for your identity",
            )
        g.identity = identity

    _register_error_handlers(app)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.post(f"{API}/ads")
    def advertise() -> Response:
        body = _body()
        lifetime = body.get("lifetime")
        if lifetime is not None and (isinstance(lifetime, bool) or not isinstance(lifetime, int)):
            raise RequestError(400, "lifetime must be an integer number of seconds or null")
        ads = _ads(body, "ads")
        return jsonify(advertised=store.advertise(ads, g.identity, lifetime))

    @app.post(f"{API}/ads/query")
    def query_ads() -> Response:
        body = _body()
        ads = store.query_ads(
            _str(body, "type", "Any"), _str(body, "constraint", "true"), _projection(body)
        )
        return jsonify(ads=[classads.ad_to_json(ad) for ad in ads])

    @app.post(f"{API}/ads/invalidate")
    def invalidate() -> Response:
        body = _body()
        count = store.invalidate(_str(body, "type", "Any"), _str(body, "constraint", "true"))
        return jsonify(invalidated=count)

    @app.post(f"{API}/jobs")
    def submit() -> Response:
        return jsonify(ids=store.submit(_ads(_body(), "jobs"), g.identity))

    @app.post(f"{API}/jobs/query")
    def query_jobs() -> Response:
        body = _body()
        jobs = store.query_jobs(_str(body, "constraint", "true"), _projection(body))
        return jsonify(jobs=[classads.ad_to_json(ad) for ad in jobs])

    @app.post(f"{API}/jobs/remove")
    def remove() -> Response:
        body = _body()
        if "constraint" not in body:
            raise RequestError(400, 'constraint is required; send "true" to remove every job')
        return jsonify(removed=store.remove_jobs(_str(body, "constraint", "true")))

    @app.post(f"{API}/jobs/claim")
    def claim() -> Response:
        machine = classads.json_to_ad(_body().get("machine"), "machine")
        job = store.claim(machine, g.identity)
        return jsonify(job=None if job is None else classads.ad_to_json(job))

    @app.post(f"{API}/jobs/<job_id>/complete")
    def complete(job_id: str) -> Response:
        body = _body()
        exit_code = body.get("exit_code")
        if isinstance(exit_code, bool) or not isinstance(exit_code, int):
            raise RequestError(400, "exit_code must be an integer")
        tail = body.get("output_tail", "")
        if not isinstance(tail, str):
            raise RequestError(400, "output_tail must be a string")
        job = store.complete(job_id, exit_code, tail, g.identity)
        return jsonify(job=classads.ad_to_json(job))

    return app


def _register_error_handlers(app: Flask) -> None:
    """Every refusal is JSON {"error": "<one line>"} with the fitting status; all are logged."""

    @app.errorhandler(RequestError)
    def refused(exc: RequestError) -> tuple[Response, int]:
        return _error(exc.status, str(exc))

    @app.errorhandler(classads.ClassAdError)
    def malformed(exc: classads.ClassAdError) -> tuple[Response, int]:
        return _error(400, str(exc))

    @app.errorhandler(PoolError)
    def pool_error(exc: PoolError) -> tuple[Response, int]:
        status = (
            404
            if isinstance(exc, NotFoundError)
            else 409
            if isinstance(exc, ConflictError)
            else 400
        )
        return _error(status, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(exc.code or 500, f"{exc.name}: {request.method} {request.path}")

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> tuple[Response, int]:
        log.exception("internal error on %s %s", request.method, request.path)
        return _error(500, "internal error in the collector; see its log")

    @app.after_request
    def log_request(response: Response) -> Response:
        level = logging.WARNING if response.status_code >= 400 else logging.DEBUG
        log.log(
            level,
            "%s %s %s by %s",
            request.method,
            request.path,
            response.status_code,
            g.get("identity", "-"),
        )
        return response


def _error(status: int, reason: str) -> tuple[Response, int]:
    return jsonify(error=reason), status


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise RequestError(
            400, "the request body must be a JSON object (Content-Type: application/json)"
        )
    return body


def _str(body: dict[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise RequestError(400, f"{key} must be a string")
    return value


def _projection(body: dict[str, Any]) -> list[str] | None:
    value = body.get("projection")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise RequestError(400, "projection must be a list of attribute names")
    return [classads.check_attr_name(a, "projection") for a in value]


def _ads(body: dict[str, Any], key: str) -> list[classad2.ClassAd]:
    value = body.get(key)
    if not isinstance(value, list):
        raise RequestError(400, f"{key} must be a list of ads (JSON objects)")
    return [classads.json_to_ad(item, f"{key}[{index}]") for index, item in enumerate(value)]


def parse_listen(listen: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [addr]:port), with an error naming the bad value."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:9618).")
    return host, int(port)


def serve(
    db: Path,
    listen: str,
    tokens: Path | None = None,
    tls: tuple[Path, Path] | None = None,
    threads: int = 4,
) -> None:
    """Run until SIGTERM or SIGINT, then finish in-flight requests and close the database."""
    host, port = parse_listen(listen)
    auth = TokenAuth(tokens) if tokens is not None else None
    if auth is None:
        log.warning(
            "no --tokens file: ANY client that can reach %s is accepted as "
            "anonymous@<its address>; use this only on a private host",
            listen,
        )
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(str(tls[0]), str(tls[1]))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"--tls-cert {tls[0]} / --tls-key {tls[1]}: cannot load them ({exc})."
            ) from exc
    store = Store(db)
    app = create_app(store, auth)
    stop = threading.Event()
    purger = threading.Thread(target=_purge_loop, args=(store, stop), name="purge", daemon=True)
    purger.start()
    previous = _install_stop_signals()
    try:
        if tls is None:
            _serve_waitress(app, host, port, threads)
        else:
            _serve_tls(app, host, port, context)
    finally:
        stop.set()
        purger.join(timeout=5)
        for signum, handler in previous:
            signal.signal(signum, handler)
        store.close()
        log.info("collector stopped")


def _purge_loop(store: Store, stop: threading.Event) -> None:
    while not stop.wait(PURGE_INTERVAL):
        try:
            store.purge_expired()
        except Exception:
            log.exception("purging expired ads failed; will retry")


def _install_stop_signals() -> list[tuple[int, Any]]:
    """SIGTERM and SIGINT raise SystemExit in the main thread, which both servers treat as stop."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        raise SystemExit(0)

    return [(s, signal.signal(s, stop)) for s in (signal.SIGTERM, signal.SIGINT)]


def _serve_waitress(app: Flask, host: str, port: int, threads: int) -> None:
    from waitress import create_server

    server = create_server(app, host=host, port=port, threads=threads, ident="gwms-collector")
    log.info("collector listening on http://%s:%s", host, port)
    server.run()  # returns after closing the sockets when SystemExit is raised


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("tls: " + format, *args)


class _TLSServer(ThreadingMixIn, WSGIServer):
    """Threaded stdlib WSGI server over TLS (waitress cannot terminate TLS)."""

    daemon_threads = False
    block_on_close = True
    context: ssl.SSLContext

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        sock.settimeout(30)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()  # in the worker thread, so a slow client blocks only itself
        except (ssl.SSLError, OSError) as exc:
            log.warning("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        super().finish_request(request, client_address)


def _serve_tls(app: Flask, host: str, port: int, context: ssl.SSLContext) -> None:
    server = _TLSServer((host, port), _QuietHandler)
    server.context = context
    server.set_app(app)
    log.info("collector listening on https://%s:%s", host, port)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()
