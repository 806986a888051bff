"""HTTP with the factory web service: sha256-checked streamed downloads, log PUTs, status POSTs.

Downloads stream to a temporary file next to the target while hashing, so a pilot tarball of
any size never sits in memory, and the file appears under its name only once its sha256
matched. Network errors and 5xx are retried with backoff inside an overall deadline; a wrong
hash is never retried (the file is what the factory serves). Redirects are refused: uploads
carry the glidein's bearer token. Stdlib only, Python 3.6.
"""

import hashlib
import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, Optional  # noqa: F401 (type comments)

from gwms_context import __version__
from gwms_context.log import get_logger

LOG = get_logger("factoryweb")
USER_AGENT = "gwms-bootstrap/" + __version__
DEFAULT_TIMEOUT = 10.0
DEFAULT_DEADLINE = 120.0
MAX_DOWNLOAD = 2 * 1024 * 1024 * 1024
_CHUNK = 256 * 1024
_RETRY_STATUSES = (429, 500, 502, 503, 504)


class WebError(Exception):
    """A transfer with the factory failed for good; one sentence saying what and where."""


class IntegrityError(WebError):
    """A downloaded file does not have the sha256 the UserData promised."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: PLR0917 (urllib API)
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return "HTTP %d" % exc.code
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, socket.timeout):
            return "timed out"
        return str(getattr(reason, "strerror", None) or reason)
    if isinstance(exc, socket.timeout):
        return "timed out"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in _RETRY_STATUSES
    return isinstance(exc, (OSError, http.client.HTTPException))


def _with_retries(what, attempt, timeout, deadline, max_tries=1000):
    # type: (str, Callable[[float], object], float, float, int) -> object
    """Run attempt(per_try_timeout) until it succeeds, fails for good, or tries or time run out."""
    end = time.monotonic() + deadline
    tries = 0
    while True:
        tries += 1
        per_try = max(0.1, min(timeout, end - time.monotonic()))
        try:
            return attempt(per_try)
        except WebError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            last = _reason(exc)
            if not _retryable(exc) or tries >= max_tries or time.monotonic() + 0.1 >= end:
                raise WebError(
                    "%s failed after %d %s (last: %s); check that the factory web service "
                    "is reachable from this VM"
                    % (what, tries, "try" if tries == 1 else "tries", last)
                ) from None
            LOG.info("%s: try %d failed (%s), retrying", what, tries, last)
            time.sleep(min(0.2 * 2 ** (tries - 1), 5.0, max(0.0, end - time.monotonic())))


def download(
    url: str,
    dest: str,
    sha256: Optional[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = DEFAULT_DEADLINE,
    max_bytes: int = MAX_DOWNLOAD,
) -> str:
    """GET url into dest (0644); sha256 None only on the legacy path. Returns the hex digest."""
    temporary = "%s.part.%d" % (dest, os.getpid())

    def attempt(per_try: float) -> str:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        digest = hashlib.sha256()
        size = 0
        with _OPENER.open(request, timeout=per_try) as answer:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(descriptor, "wb") as handle:
                while True:
                    chunk = answer.read(_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_bytes:
                        raise WebError(
                            "%s is larger than %d bytes; refusing it (check the factory's web "
                            "area)" % (url, max_bytes)
                        )
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        return digest.hexdigest()

    try:
        found = _with_retries("GET %s" % url, attempt, timeout, deadline)
        if sha256 is not None and found != sha256:
            raise IntegrityError(
                "%s has sha256 %s but the user data expects %s; the file was changed after the "
                "glidein was issued or corrupted on the way, refusing to run it"
                % (url, found, sha256)
            )
        os.replace(temporary, dest)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return found


def send(
    method: str,
    url: str,
    body: bytes,
    token: str,
    content_type: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    deadline: float = 30.0,
    max_tries: int = 1000,
) -> int:
    """PUT/POST body with the glidein's bearer token; returns the HTTP status (2xx only)."""
    headers = {
        "User-Agent": USER_AGENT,
        "Authorization": "Bearer " + token,
        "Content-Type": content_type,
    }

    def attempt(per_try: float) -> int:
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=per_try) as answer:
                answer.read()
                return answer.getcode()
        except urllib.error.HTTPError as exc:
            if exc.code in _RETRY_STATUSES:
                raise
            raise WebError(
                "%s %s was refused with HTTP %d%s" % (method, url, exc.code, _hint(exc.code))
            ) from None

    return int(_with_retries("%s %s" % (method, url), attempt, timeout, deadline, max_tries))


def _hint(status: int) -> str:
    if status in (401, 403):
        return "; the glidein's upload token is wrong or expired"
    if status == 413:
        return "; the factory's max_upload_size is smaller than this file"
    return ""
