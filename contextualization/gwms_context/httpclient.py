"""Tiny urllib client for metadata services: per-try timeout, bounded retries, overall deadline.

Metadata services answer on a link-local address from the VM itself, so the client never
uses proxies from the environment and never follows redirects (a redirect would carry the
IMDS session token elsewhere). Stdlib only, Python 3.6 syntax.
"""

import http.client
import socket
import time
import urllib.error
import urllib.request
from typing import Callable, Mapping, Optional, Union

from gwms_context import __version__
from gwms_context.log import get_logger

LOG = get_logger("http")

# Statuses that mean "try again": the service is starting, overloaded or throttling us.
RETRY_STATUSES = frozenset([429, 500, 502, 503, 504])
# User data is at most 256 KiB on every cloud we know (GCE); anything far larger is garbage.
MAX_BODY = 4 * 1024 * 1024
_CHUNK = 64 * 1024
USER_AGENT = "gwms-bootstrap/" + __version__


class HttpError(Exception):
    """A metadata request failed for good (retries and deadline exhausted, or a hard failure)."""


class HttpTimeout(HttpError):
    """One try timed out and the caller asked not to retry timeouts."""


class Deadline(object):
    """An overall time budget shared by every request of one fetch."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = float(seconds)
        self._clock = clock
        self._end = clock() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    def elapsed(self) -> float:
        return self.seconds - (self._end - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


class Response(object):
    """Status, headers and body of one answered request (any status, 4xx included)."""

    __slots__ = ("body", "headers", "status", "url")

    def __init__(self, url: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> Optional[str]:
        """Case-insensitive header lookup (http.client.HTTPMessage already is)."""
        return self.headers.get(name)

    def __repr__(self) -> str:
        # The body may hold credentials: never show it.
        return "Response(%r, status=%d, %d bytes)" % (self.url, self.status, len(self.body))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0917 (urllib API)
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        if isinstance(reason, socket.timeout):
            return "timed out"
        return str(getattr(reason, "strerror", None) or reason)
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0] if text else exc.__class__.__name__


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, socket.timeout):
        return True
    return isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, socket.timeout)


class HttpClient(object):
    """Requests against one metadata service, all within one Deadline.

    `request()` returns any answered response (callers decide what 401/404 mean) except the
    RETRY_STATUSES, which are retried with exponential backoff like network errors.
    """

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        deadline: Union[float, Deadline] = 30.0,
        max_tries: int = 20,
        backoff: float = 0.25,
        max_backoff: float = 2.0,
        max_body: int = MAX_BODY,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = float(timeout)
        self.deadline = deadline if isinstance(deadline, Deadline) else Deadline(deadline)
        self.max_tries = max(1, int(max_tries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_body = max_body
        self._sleep = sleep
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def get(self, url: str, headers: Optional[Mapping[str, str]] = None) -> Response:
        return self.request("GET", url, headers=headers)

    def request(
        self,
        method: str,
        url: str,
        headers: Optional[Mapping[str, str]] = None,
        data: Optional[bytes] = None,
        retry_timeouts: bool = True,
    ) -> Response:
        tries = 0
        last = "deadline already exhausted"
        while tries < self.max_tries:
            per_try = min(self.timeout, self.deadline.remaining())
            if per_try <= 0:
                break
            tries += 1
            try:
                response = self._once(method, url, headers, data, per_try)
            except (OSError, http.client.HTTPException) as exc:
                last = _describe(exc)
                if _is_timeout(exc) and not retry_timeouts:
                    raise HttpTimeout(
                        "%s %s timed out after %.1f s" % (method, url, per_try)
                    ) from None
            else:
                if response.status not in RETRY_STATUSES:
                    return response
                last = "HTTP %d" % response.status
            LOG.info("%s %s: try %d failed (%s)", method, url, tries, last)
            if tries < self.max_tries:
                self._sleep(
                    min(
                        self.backoff * (2 ** (tries - 1)),
                        self.max_backoff,
                        self.deadline.remaining(),
                    )
                )
        raise HttpError(
            "%s %s failed after %d tries in %.1f s (last: %s); check that the metadata service "
            "is reachable from this VM or pass --metadata-url"
            % (method, url, tries, self.deadline.elapsed(), last)
        )

    def _once(self, method, url, headers, data, per_try) -> Response:
        all_headers = {"User-Agent": USER_AGENT}
        all_headers.update(headers or {})
        request = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        started = time.monotonic()
        try:
            answer = self._opener.open(request, timeout=per_try)
        except urllib.error.HTTPError as err:
            answer = err
        try:
            body = b""
            if getattr(answer, "fp", None) is not None:  # an HTTPError may carry no body
                body = self._read(answer, url, started, per_try)
            return Response(url, answer.getcode(), answer.headers, body)
        finally:
            answer.close()

    def _read(self, answer, url, started, per_try) -> bytes:
        chunks = []
        size = 0
        while True:
            chunk = answer.read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body:
                raise HttpError(
                    "the answer from %s is larger than %d bytes, which no metadata service "
                    "sends; check --metadata-url" % (url, self.max_body)
                )
            if time.monotonic() - started > per_try:
                raise socket.timeout("body not received within %.1f s" % per_try)
            chunks.append(chunk)
