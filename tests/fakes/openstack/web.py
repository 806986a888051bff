"""What every service module of the fake shares: errors, the public-route mark, state access."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import current_app, request

if TYPE_CHECKING:
    from tests.fakes.openstack.state import CloudState

View = TypeVar("View", bound=Callable[..., Any])


class ApiError(Exception):
    """An HTTP error answer in the body shape of the service that raises it."""

    def __init__(
        self, status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def public(view: View) -> View:
    """Mark a route that needs no token (version discovery, token issue)."""
    view.fake_public = True  # type: ignore[attr-defined]
    return view


def cloud() -> CloudState:
    """The state of the fake serving this request."""
    return current_app.extensions["fake_openstack"]


def base_url() -> str:
    """The fake's own root URL, e.g. http://127.0.0.1:PORT (no trailing slash)."""
    return str(current_app.config["FAKE_BASE_URL"])


def json_body() -> dict[str, Any]:
    """The request's JSON object, whatever its content type; {} when absent or not an object."""
    data = request.get_json(force=True, silent=True)
    return data if isinstance(data, dict) else {}


def int_param(name: str, error: Callable[[str], ApiError]) -> int | None:
    """A non-negative integer query parameter, or None when absent."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise error(f"Invalid input for query parameters {name}. Value: {raw}.") from None
    if value < 0:
        raise error(f"Invalid input for query parameters {name}. Value: {raw}.")
    return value
