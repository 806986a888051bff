"""What every middleware module shares: detection results, fetch options, root-relative paths.

A middleware module (one per cloud transport, like a cloud-init datasource) provides:

- ``NAME``: the name used by ``--middleware`` and ``gwms.middleware=`` on the kernel command line;
- ``detect(root) -> Detection``: cheap and offline (DMI strings, disk labels, files), never
  touching the network;
- ``fetch(opts) -> bytes or None``: the raw user data, already decoded from the cloud's own
  transport encoding (base64 in OpenNebula's context.sh, ...), or None when the cloud has none.

Every path is taken under ``root`` so tests run against a fake tree.
"""

import contextlib
import os
import subprocess
import tempfile
from typing import Iterator, List, Optional

from gwms_context.httpclient import HttpClient
from gwms_context.log import get_logger

LOG = get_logger("middleware")

NOT_FOUND = 0
WEAK = 1  # a hint reported in errors, never enough to pick a middleware on its own
CONFIDENT = 2

DEFAULT_TIMEOUT = 2.0
DEFAULT_DEADLINE = 30.0
_MAX_SYMLINKS = 40


class MiddlewareError(Exception):
    """Detection or retrieval failed; the message is one sentence: what, where, what to do."""


class Detection(object):
    """How sure a module is that this VM runs on its cloud, and why (for logs and errors)."""

    __slots__ = ("confidence", "evidence")

    def __init__(self, confidence: int = NOT_FOUND, evidence: Optional[List[str]] = None) -> None:
        self.confidence = confidence
        self.evidence = list(evidence or [])

    @classmethod
    def from_findings(cls, findings: "List[tuple]") -> "Detection":
        """Combine (confidence, evidence) pairs: the best confidence, every piece of evidence."""
        if not findings:
            return cls()
        return cls(max(level for level, _ in findings), [text for _, text in findings])

    def __bool__(self) -> bool:
        return self.confidence >= CONFIDENT

    def __repr__(self) -> str:
        return "Detection(%d, %r)" % (self.confidence, self.evidence)


class FetchOptions(object):
    """Where and how long to look: overridable paths and URLs, per-try timeout, deadline."""

    def __init__(
        self,
        *,
        root: str = "/",
        metadata_url: Optional[str] = None,
        config_drive: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        max_tries: int = 20,
    ) -> None:
        if metadata_url is not None and not metadata_url.startswith(("http://", "https://")):
            raise MiddlewareError(
                "--metadata-url %r is not an http:// or https:// URL; pass the base URL of the "
                "metadata service, e.g. http://169.254.169.254" % metadata_url
            )
        if timeout <= 0 or deadline <= 0:
            raise MiddlewareError("--timeout and --deadline must be positive numbers of seconds")
        self.root = root
        self.metadata_url = metadata_url.rstrip("/") if metadata_url else None
        self.config_drive = config_drive
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        self.max_tries = max_tries

    def base_url(self, default: str) -> str:
        return self.metadata_url or default

    def http_client(self) -> HttpClient:
        """A client whose overall deadline starts now."""
        return HttpClient(timeout=self.timeout, deadline=self.deadline, max_tries=self.max_tries)


def in_root(root: str, path: str) -> str:
    """``<root>/<path>`` with symlinks resolved as if ``root`` were ``/``.

    cloud-init's /var/lib/cloud/instance is an absolute symlink; under a fake root it must
    stay inside the tree instead of escaping to the host's files.
    """
    if not root or os.path.abspath(root) == "/":
        return "/" + path.lstrip("/")
    pending = [part for part in path.split("/") if part]
    resolved = []  # type: List[str]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *(resolved + [part]))
        if os.path.islink(candidate):
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise MiddlewareError(
                    "too many symbolic links under %s resolving %s" % (root, path)
                )
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in target.split("/") if p] + pending
        else:
            resolved.append(part)
    return os.path.join(root, *resolved)


def read_text(root: str, path: str) -> str:
    """A small text file under root, stripped; "" when missing or unreadable (e.g. not root)."""
    try:
        with open(in_root(root, path), encoding="utf-8", errors="replace") as handle:
            return handle.read(4096).strip()
    except (OSError, MiddlewareError):
        return ""


def dmi(root: str, key: str) -> str:
    """One DMI string from <root>/sys/class/dmi/id (product_uuid is readable by root only)."""
    return read_text(root, "sys/class/dmi/id/" + key)


def find_label(root: str, *labels: str) -> Optional[str]:
    """The /dev/disk/by-label entry (under root) of the first label present, as udev names it."""
    for label in labels:
        entry = os.path.join(root, "dev/disk/by-label", label)
        if os.path.lexists(entry):
            return entry
    return None


def read_bytes(path: str, what: str) -> bytes:
    """Read a whole file that must be readable; unreadable is an error naming it."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise MiddlewareError(
            "cannot read %s %s: %s; run gwms-bootstrap as root or pass its location"
            % (what, path, exc.strerror or exc)
        ) from None


@contextlib.contextmanager
def mounted_read_only(device: str, timeout: float = 30.0) -> Iterator[str]:
    """Mount a config drive / context CD read-only on a private temp dir; unmount after."""
    mountpoint = tempfile.mkdtemp(prefix="gwms-drive-")
    try:
        _run(["mount", "-o", "ro", device, mountpoint], timeout, "mount %s read-only" % device)
        try:
            yield mountpoint
        finally:
            try:
                _run(["umount", mountpoint], timeout, "unmount %s" % mountpoint)
            except MiddlewareError as exc:
                LOG.warning("%s", exc)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


def _run(argv: List[str], timeout: float, what: str) -> None:
    try:
        result = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = str(exc)
    else:
        if result.returncode == 0:
            return
        # mount's first line says why; later lines are generic hints ("dmesg(1) may have ...").
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines()]
        lines = [line for line in lines if line]
        why = lines[0].rstrip(".") if lines else "exit %d" % result.returncode
    raise MiddlewareError(
        "cannot %s: %s; run gwms-bootstrap as root, or copy the drive's files to a directory "
        "and pass --config-drive DIR" % (what, why)
    )
