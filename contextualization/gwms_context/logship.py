"""Ship the glidein's logs and status reports to the factory web service, with its bearer token.

Logs go as `PUT <log_upload.url>/<launch index>/<name>.gz`: each file's last `max_file_bytes`
(the end of a log says why it ended), gzip-compressed, re-sent on a timer only when it
changed. Status reports go as `POST <base>/status/<entry>/<client>/<batch>/<launch index>`,
the status URL being the log URL with its `/logs/` segment replaced by `/status/` (the
factory web service's layout). Failures are logged, never fatal: a VM whose factory is gone
must still power off. The token never reaches a log line. Stdlib only, Python 3.6.
"""

import errno
import gzip
import json
import os
import stat
import time
from typing import Callable, Dict, List, Optional, Tuple  # noqa: F401 (type comments)

from gwms_context import factoryweb
from gwms_context.log import get_logger

LOG = get_logger("logship")
DEFAULT_MAX_FILE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_TOTAL_BYTES = 16 * 1024 * 1024


def status_url(log_url: str, launch_index: int) -> str:
    """Where status reports go: the log URL with /logs/ -> /status/, plus the launch index."""
    base = log_url.rstrip("/")
    head, sep, tail = base.rpartition("/logs/")
    if sep:
        return "%s/status/%s/%d" % (head, tail, launch_index)
    return "%s/%d/status" % (base, launch_index)


def _real_path(descriptor: int, path: str) -> str:
    try:
        return os.readlink("/proc/self/fd/%d" % descriptor)
    except OSError:
        return os.path.realpath(path)


def tail_bytes(path: str, limit: int, inside: Optional[str] = None) -> bytes:
    """The last `limit` bytes of a regular file, with a first line saying how much was cut.

    Files in directories the pilot owns are opened without following links and must really
    be `inside` that directory: root must never ship /etc/shadow because a pilot linked it.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if inside is not None:
            real = _real_path(descriptor, path)
            if not real.startswith(os.path.realpath(inside).rstrip("/") + "/"):
                raise OSError(errno.EXDEV, "resolves outside %s" % inside)
        size = info.st_size
        if size <= limit:
            return handle.read(limit)
        handle.seek(size - limit)
        data = handle.read(limit)
    header = "[gwms: first %d bytes of %d dropped to fit the upload cap]\n" % (size - limit, size)
    return header.encode("ascii") + data


class LogShipper(object):
    """Uploads the files `sources()` lists and status reports.

    `sources()` returns (upload name, path, inside) triples; `inside` is the directory a file
    must really be in when an untrusted user (the pilot) controls it, else None.
    """

    def __init__(
        self,
        *,
        log_url: Optional[str],
        token: Optional[str],
        launch_index: int,
        glidein_id: str,
        sources,  # type: Callable[[], List[Tuple[str, str, Optional[str]]]]
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        timeout: float = 5.0,
        deadline: float = 15.0,
    ) -> None:
        self.log_url = log_url.rstrip("/") if log_url else None
        self._token = token
        self.launch_index = launch_index
        self.glidein_id = glidein_id
        self.sources = sources
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.timeout = timeout
        self.deadline = deadline
        self._sent = {}  # type: Dict[str, Tuple[int, float]]
        self._failed = False  # after one failure, single tries: never hold up the power-off
        self.uploaded = 0

    def __repr__(self) -> str:
        return "LogShipper(%r, index=%d)" % (self.log_url, self.launch_index)

    @property
    def enabled(self) -> bool:
        return bool(self.log_url and self._token)

    def ship(self, force: bool = False) -> int:
        """Upload every changed file (all with force); returns how many went up."""
        if not self.enabled:
            return 0
        sent = 0
        budget = self.max_total_bytes
        for name, path, inside in self.sources():
            try:
                info = os.lstat(path)
            except OSError:
                continue
            stamp = (info.st_size, info.st_mtime)
            if not force and self._sent.get(name) == stamp:
                continue
            try:
                body = gzip.compress(tail_bytes(path, min(self.max_file_bytes, budget), inside))
            except OSError as exc:
                LOG.warning("not uploading %s: %s", path, exc.strerror or exc)
                continue
            budget -= min(info.st_size, self.max_file_bytes)
            remote = name if name.endswith(".gz") else name + ".gz"
            url = "%s/%d/%s" % (self.log_url, self.launch_index, remote)
            try:
                self._send("PUT", url, body, "application/gzip")
            except factoryweb.WebError as exc:
                LOG.warning("log upload stopped: %s", exc)
                return sent
            self._sent[name] = stamp
            sent += 1
            self.uploaded += 1
            if budget <= 0:
                LOG.warning(
                    "log upload cap of %d bytes reached; later files skipped", self.max_total_bytes
                )
                break
        return sent

    def report(self, stage: str, message: str = "", exit_code: Optional[int] = None) -> bool:
        """POST one status report; False (logged) when the factory did not take it."""
        if not self.enabled:
            return False
        body = json.dumps(
            {
                "glidein_id": self.glidein_id,
                "stage": stage,
                "message": message,
                "exit_code": exit_code,
                "time": int(time.time()),
            },
            sort_keys=True,
        ).encode("utf-8")
        url = status_url(self.log_url, self.launch_index)
        try:
            self._send("POST", url, body, "application/json", single_try=True)
        except factoryweb.WebError as exc:
            LOG.warning("status report %r not delivered: %s", stage, exc)
            return False
        return True

    def _send(self, method, url, body, content_type, single_try=False):
        # type: (str, str, bytes, str, bool) -> None
        """Status reports and anything after a failure get one try: never hold up the VM."""
        once = self._failed or single_try
        try:
            factoryweb.send(
                method,
                url,
                body,
                self._token,
                content_type,
                timeout=self.timeout,
                deadline=self.deadline,
                max_tries=1 if once else 1000,
            )
        except factoryweb.WebError:
            self._failed = True
            raise
        self._failed = False
