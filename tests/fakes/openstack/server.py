"""`FakeOpenStack`: the Flask app of the fake served on 127.0.0.1, plus its test hooks.

The HTTP side is what openstacksdk, Packer's openstack builder and the `openstack.cloud`
Ansible modules talk to; the Python methods here are for tests only (faults, delays,
undeletable servers, call counts, the user data a server was given).
"""

from __future__ import annotations

import base64
import copy
import threading
from collections.abc import Callable, Iterable
from typing import Any, Self

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests.fakes.openstack import glance, keystone, neutron, nova
from tests.fakes.openstack.hooks import InjectedFailure, RouteHooks
from tests.fakes.openstack.state import CloudState, Credentials, Server, UndeletableMode
from tests.fakes.openstack.web import ApiError

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (tests read their own output)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


def _strip_trailing_slash(app: WsgiApp) -> WsgiApp:
    """OpenStack clients ask for `/v3/` and `/v3` alike: route both to the same rule."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if len(path) > 1 and path.endswith("/"):
            environ["PATH_INFO"] = path.rstrip("/") or "/"
        return app(environ, start_response)

    return wrapped


def _route_key() -> str:
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    return f"{request.method} {rule}"


def parse_version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


class FakeOpenStack:
    """A stateful Keystone v3 + Nova + Neutron + Glance on 127.0.0.1 (port 0 = a free one)."""

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        nova_max_version: str = "2.79",
        boot_delay: float = 0.0,
        delete_delay: float = 0.0,
        token_ttl: float = 3600.0,
    ) -> None:
        self.credentials = credentials or Credentials()
        self.state = CloudState(self.credentials)
        self.state.boot_delay = boot_delay
        self.state.delete_delay = delete_delay
        self.state.token_ttl = token_ttl
        self.hooks = RouteHooks()
        self.host = host
        self._requested_port = port
        self._nova_max_version = parse_version(nova_max_version)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"FakeOpenStack({where}, user={self.credentials.username!r})"

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake OpenStack is not started")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/v3"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the fake OpenStack is already started")
        server = make_server(
            self.host, self._requested_port, self.app, threaded=True, request_handler=_QuietHandler
        )
        self._server = server
        self.app.config["FAKE_BASE_URL"] = self.url
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name=f"FakeOpenStack:{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test hooks --------------------------------------------------------------------

    def routes(self) -> set[str]:
        """Every route key the fake serves, e.g. `GET /compute/v2.1/servers/<server_id>`."""
        return {
            f"{method} {rule.rule}"
            for rule in self.app.url_map.iter_rules()
            for method in rule.methods or ()
            if method not in ("HEAD", "OPTIONS") and rule.endpoint != "static"
        }

    def calls(self, route: str) -> int:
        """How many requests reached `route` (a key from `routes()`), failed ones included."""
        return self.hooks.counts[route]

    def call_counts(self) -> dict[str, int]:
        return dict(self.hooks.counts)

    @property
    def unknown_routes(self) -> list[str]:
        """`METHOD /path` of requests the fake has no route for (answered 404/405)."""
        return list(self.hooks.unknown)

    def inject_failures(
        self, route: str, count: int = 1, *, status: int = 503, retry_after: int | None = None
    ) -> None:
        """Answer the next `count` calls to `route` with `status` (429/503, Retry-After)."""
        if route not in self.routes():
            raise ValueError(f"the fake OpenStack has no route {route!r}; see routes()")
        self.hooks.inject(route, InjectedFailure(status, count, retry_after))

    def set_boot_delay(self, seconds: float) -> None:
        """New servers stay BUILD this long before turning ACTIVE."""
        with self.state.lock:
            self.state.boot_delay = seconds

    def set_delete_delay(self, seconds: float) -> None:
        """Deleted servers stay listed (task_state `deleting`) this long."""
        with self.state.lock:
            self.state.delete_delay = seconds

    def mark_undeletable(self, server_id: str, mode: UndeletableMode = "stays") -> None:
        """DELETE of this server is accepted but it `stays` as it is or goes to `error`."""
        with self.state.lock:
            self.state.undeletable[server_id] = mode

    def set_quota(self, **limits: int) -> None:
        """Change the project quota (`instances`, `cores`, `ram` in MB)."""
        unknown = set(limits) - set(self.state.quota)
        if unknown:
            raise ValueError(f"unknown quota {sorted(unknown)}; known: {sorted(self.state.quota)}")
        with self.state.lock:
            self.state.quota.update(limits)

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (clients must authenticate again)."""
        with self.state.lock:
            self.state.tokens.clear()

    def servers(self) -> list[Server]:
        """Snapshots of the servers that exist now, oldest first."""
        with self.state.lock:
            self.state.advance()
            return [
                copy.deepcopy(s) for s in sorted(self.state.servers.values(), key=lambda s: s.seq)
            ]

    def server(self, server_id: str) -> Server:
        with self.state.lock:
            self.state.advance()
            return copy.deepcopy(self.state.servers[server_id])

    def user_data(self, server_id: str) -> bytes | None:
        """The decoded user data the server was created with (None when it had none)."""
        with self.state.lock:
            encoded = self.state.servers[server_id].user_data
        return None if encoded is None else base64.b64decode(encoded)

    # -- the app -----------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("fake_openstack")
        app.extensions["fake_openstack"] = self.state
        app.config["FAKE_NOVA_MAX_VERSION"] = self._nova_max_version
        app.json.sort_keys = False  # type: ignore[attr-defined]
        for module in (keystone, nova, neutron, glance):
            app.register_blueprint(module.bp)
        app.before_request(self._before_request)
        app.register_error_handler(ApiError, _api_error)
        app.register_error_handler(HTTPException, self._http_error)
        app.wsgi_app = _strip_trailing_slash(app.wsgi_app)  # type: ignore[method-assign]
        return app

    def _before_request(self) -> Response | None:
        """Count the call, answer an injected failure, then demand a valid token."""
        if request.url_rule is None:
            return None  # the 404/405 handler records it
        failure = self.hooks.seen(_route_key())
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            return _api_error(
                ApiError(
                    failure.status,
                    {"error": {"code": failure.status, "message": "injected failure"}},
                    headers,
                )
            )
        view = self.app.view_functions.get(request.endpoint or "")
        if getattr(view, "fake_public", False):
            return None
        token = self.state.valid_token(request.headers.get("X-Auth-Token"))
        if token is None or not token.scoped:
            raise keystone.unauthorized()
        return None

    def _http_error(self, error: HTTPException) -> Response:
        if error.code in (404, 405):
            self.hooks.unknown_route(f"{request.method} {request.path}")
        response = jsonify({"error": {"code": error.code, "message": error.description}})
        response.status_code = error.code or 500
        return response


def _api_error(error: ApiError) -> Response:
    if isinstance(error.body, str):
        response = Response(error.body, content_type="text/plain; charset=UTF-8")
    else:
        response = jsonify(error.body)
    response.status_code = error.status
    response.headers.update(error.headers)
    return response
