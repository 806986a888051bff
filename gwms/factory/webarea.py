"""The factory's web area: the pilot files VMs download, and the sha256 manifest they trust.

The manifest (`manifest.json`, a JSON map of file name to sha256 hex) is what the factory
copies into every UserData `files` map; a VM runs a file only if its hash matches. So the
web service never serves bytes that do not hash to their manifest entry: a file changed
after the manifest was built is refused (HTTP 409, logged) until the operator rebuilds the
manifest (`build_manifest`, or `install_web_area` again). It is not rebuilt silently,
because a silent rebuild would put an unreviewed change into every new glidein.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gwms.errors import GwmsError

log = logging.getLogger("gwms.factory.web")

MANIFEST = "manifest.json"
PACKAGED_DIR = Path(__file__).with_name("web_area")
# Files of the packaged directory that document it and are not pilot files.
PACKAGED_SKIP = frozenset({"README.md"})
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
RACY_WINDOW_NS = 2_000_000_000  # files changed this recently are re-hashed on every open

# Identity of a file's current content: a rewrite changes the inode or mtime/ctime/size.
_StatKey = tuple[int, int, int, int, int]


class WebAreaError(GwmsError):
    """The web area or its manifest is missing, unreadable or inconsistent."""


class FileChangedError(WebAreaError):
    """A pilot file no longer hashes to its manifest entry (or vanished) since the manifest."""

    def __init__(self, name: str, expected: str, found: str | None) -> None:
        self.name = name
        self.expected = expected
        self.found = found
        now = "is missing" if found is None else f"now has sha256 {found}"
        super().__init__(
            f"web area file {name} {now} but manifest.json says {expected}; it is not served"
            " until you restore it or rebuild the manifest (install_web_area / build_manifest)."
        )


def is_plain_name(name: str) -> bool:
    """A single path component we are willing to serve or store: no '/', no '..', no dotfiles."""
    return bool(_PLAIN_NAME.fullmatch(name)) and ".." not in name


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (pilot tarballs can be hundreds of MB)."""
    with path.open("rb") as handle:
        return _hash_handle(handle)


def build_manifest(directory: Path) -> dict[str, str]:
    """Hash every pilot file in `directory`, write `manifest.json` atomically, return the map."""
    manifest = {name: file_sha256(directory / name) for name in _pilot_files(directory)}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    _write_atomic(directory / MANIFEST, text.encode(), 0o644)
    log.info("web area %s: manifest of %d files written", directory, len(manifest))
    return manifest


def read_manifest(directory: Path) -> dict[str, str]:
    """The manifest as last built; an error names the file and says how to rebuild it."""
    return _parse_manifest(directory / MANIFEST, _read_bytes(directory / MANIFEST))


def install_web_area(dest: Path, extra_dirs: Sequence[Path] = ()) -> dict[str, str]:
    """Make `dest` hold the packaged pilot files plus the operator's, and build its manifest.

    Later directories override earlier ones (an operator may replace a packaged file).
    Files left in `dest` from a previous install that no source provides are removed, so
    the web area holds exactly what the manifest lists.
    """
    sources: dict[str, Path] = {}
    for directory in (PACKAGED_DIR, *extra_dirs):
        skip = PACKAGED_SKIP if directory == PACKAGED_DIR else frozenset()
        if not directory.is_dir():
            if directory == PACKAGED_DIR:
                continue
            raise WebAreaError(
                f"{directory}: pilot file directory not found; fix the path or create it."
            )
        for name in _pilot_files(directory, skip):
            sources[name] = directory / name
    dest.mkdir(parents=True, exist_ok=True)
    for name, source in sorted(sources.items()):
        mode = 0o755 if os.stat(source).st_mode & stat.S_IXUSR else 0o644
        _copy_atomic(source, dest / name, mode)
    for stale in set(_pilot_files(dest)) - set(sources):
        (dest / stale).unlink()
        log.info("web area %s: removed %s (no longer provided)", dest, stale)
    return build_manifest(dest)


@dataclass
class OpenedFile:
    """A verified pilot file, open for reading; the caller streams and closes `handle`."""

    name: str
    handle: BinaryIO
    size: int
    sha256: str


class WebArea:
    """Serves a web area safely: re-reads the manifest when it changes and re-hashes a file
    only when its inode, size, mtime or ctime change, refusing files that no longer match.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._manifest_key: _StatKey | None = None
        self._manifest: dict[str, str] = {}
        self._manifest_bytes = b""
        self._hashes: dict[str, tuple[_StatKey, str]] = {}

    def manifest(self) -> dict[str, str]:
        """The current manifest (reloaded from disk when `manifest.json` changes)."""
        return dict(self._load()[0])

    def manifest_bytes(self) -> bytes:
        """`manifest.json` exactly as on disk, for serving."""
        return self._load()[1]

    def open(self, name: str) -> OpenedFile | None:
        """The file if the manifest lists it and it still matches; None if not listed.

        Raises FileChangedError when the file vanished or its content changed.
        """
        manifest, _ = self._load()
        expected = manifest.get(name) if is_plain_name(name) else None
        if expected is None:
            return None
        try:
            handle = (self.directory / name).open("rb")
        except FileNotFoundError:
            raise FileChangedError(name, expected, None) from None
        try:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise FileChangedError(name, expected, None)
            digest = self._digest(name, handle, _stat_key(info))
            if digest != expected:
                raise FileChangedError(name, expected, digest)
        except BaseException:
            handle.close()
            raise
        return OpenedFile(name, handle, info.st_size, digest)

    def verify(self) -> list[FileChangedError]:
        """Every listed file that is missing or changed: for the daemon to check at start."""
        problems = []
        for name in self._load()[0]:
            try:
                opened = self.open(name)
            except FileChangedError as exc:
                problems.append(exc)
            else:
                if opened is not None:
                    opened.handle.close()
        return problems

    def _digest(self, name: str, handle: BinaryIO, key: _StatKey) -> str:
        with self._lock:
            cached = self._hashes.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = _hash_handle(handle)
        handle.seek(0)
        # A file changed within the timestamp granularity of its last change could change
        # again without its stat changing ("racy git"): hash it again next time.
        if time.time_ns() - max(key[3], key[4]) > RACY_WINDOW_NS:
            with self._lock:
                self._hashes[name] = (key, digest)
        return digest

    def _load(self) -> tuple[dict[str, str], bytes]:
        path = self.directory / MANIFEST
        try:
            key = _stat_key(path.stat())
        except FileNotFoundError:
            raise WebAreaError(
                f"{path}: the web area has no manifest; install it (install_web_area)"
                " or build one (build_manifest)."
            ) from None
        with self._lock:
            if key == self._manifest_key:
                return self._manifest, self._manifest_bytes
        data = _read_bytes(path)
        manifest = _parse_manifest(path, data)
        with self._lock:
            self._manifest_key, self._manifest, self._manifest_bytes = key, manifest, data
        log.info("web area %s: manifest loaded, %d files", self.directory, len(manifest))
        return manifest, data


def _pilot_files(directory: Path, skip: Iterable[str] = ()) -> list[str]:
    """Names of the regular files to publish; anything unservable is an error, not a surprise."""
    names = []
    for path in sorted(directory.iterdir()):
        name = path.name
        # __pycache__: pip compiles gwms_startd.py when it installs the package.
        if name == MANIFEST or name in skip or name.startswith(".") or name == "__pycache__":
            continue
        if not path.is_file():
            raise WebAreaError(
                f"{path}: only plain files can be pilot files, not directories or special files;"
                " move it out of the directory or pack it into a tarball."
            )
        if not is_plain_name(name):
            raise WebAreaError(
                f"{path}: {name!r} is not a servable file name (letters, digits and ._+-,"
                " starting with a letter or digit); rename it."
            )
        names.append(name)
    return names


def _parse_manifest(path: Path, data: bytes) -> dict[str, str]:
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebAreaError(f"{path}: not valid JSON ({exc}); rebuild it (build_manifest).") from exc
    valid = isinstance(manifest, dict) and all(
        isinstance(name, str)
        and is_plain_name(name)
        and isinstance(digest, str)
        and _SHA256.fullmatch(digest)
        for name, digest in manifest.items()
    )
    if not valid:
        raise WebAreaError(
            f"{path}: expected a JSON map of plain file names to sha256 hex;"
            " rebuild it (build_manifest)."
        )
    return manifest


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise WebAreaError(
            f"{path}: cannot read it ({exc.strerror}); install the web area (install_web_area)."
        ) from exc


def _hash_handle(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _stat_key(info: os.stat_result) -> _StatKey:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _copy_atomic(source: Path, dest: Path, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)
            os.fchmod(out.fileno(), mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = [
    "MANIFEST",
    "FileChangedError",
    "OpenedFile",
    "WebArea",
    "WebAreaError",
    "build_manifest",
    "install_web_area",
    "is_plain_name",
    "read_manifest",
]
