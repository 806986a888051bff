"""The factory key ring: the private keys that open sealed envelopes, kept in one directory.

Layout (directory 0700)::

    keys.json            index: current key id; per key: algorithm, created, retires (epoch s)
    key-<key id>.pem     PKCS#8 private key, 0600, created with that mode

Every file is written to a temporary file in the same directory, fsync-ed and renamed, so
a crash leaves either the old or the new file, never half a key. A new key file is
written before the index that names it, and a retired key file is removed only after the
index that drops it, so the index never names a missing file. Writers hold an flock on
the directory. After `rotate` the previous key still opens envelopes until its grace
period ends; it is removed on the next `load` or `rotate` after that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gwms.credentials.sealed import (
    ALG_RSA_OAEP,
    ALG_X25519,
    PrivateKey,
    PublicKey,
    SealError,
    algorithm_of,
    key_id,
)
from gwms.errors import CredentialError

INDEX_NAME = "keys.json"
INDEX_FORMAT = 1
DEFAULT_GRACE = timedelta(hours=24)
DEFAULT_RSA_BITS = 3072
# CLI spelling -> envelope algorithm name.
ALGORITHMS = {"x25519": ALG_X25519, "rsa": ALG_RSA_OAEP, ALG_RSA_OAEP: ALG_RSA_OAEP}


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{16}$")
    algorithm: Literal["x25519", "rsa-oaep"]
    created: int = Field(ge=0)
    retires: int | None = Field(default=None, ge=0)


class _Index(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1]
    current: str = Field(pattern=r"^[0-9a-f]{16}$")
    keys: list[_KeyEntry] = Field(min_length=1)


@dataclass(frozen=True)
class KeyInfo:
    """Public facts about one key in the ring (never the private key)."""

    id: str
    algorithm: str
    created: datetime
    retires: datetime | None
    public_key: PublicKey

    @property
    def current(self) -> bool:
        return self.retires is None

    def public_key_pem(self) -> str:
        return _public_pem(self.public_key)


class FactoryKeyring:
    """The factory's private keys: one current key, plus previous keys during their grace."""

    def __init__(
        self,
        directory: Path,
        index: _Index,
        private_keys: dict[str, PrivateKey],
        now: datetime | None,
    ) -> None:
        self.directory = directory
        self._index = index
        self._private = private_keys
        self._now = now

    def __repr__(self) -> str:
        return f"FactoryKeyring({str(self.directory)!r}, current={self.current_key_id!r})"

    # -- construction -------------------------------------------------------------------

    @classmethod
    def generate(
        cls,
        directory: str | os.PathLike[str],
        algorithm: str = "x25519",
        *,
        now: datetime | None = None,
        rsa_bits: int = DEFAULT_RSA_BITS,
    ) -> FactoryKeyring:
        """Create a new key ring with one key; refuses a directory that already holds one."""
        path = Path(directory)
        alg = _algorithm(algorithm)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CredentialError(
                f"cannot create key directory {path}: {exc.strerror}; "
                "choose a directory the factory user can write"
            ) from exc
        created = _utc(now)
        with _locked(path):
            if (path / INDEX_NAME).exists():
                raise CredentialError(
                    f"{path / INDEX_NAME} already exists: {path} holds a key ring; "
                    f"use `gwms key rotate --dir {path}` to replace its key"
                )
            private_key = _new_private_key(alg, rsa_bits)
            kid = key_id(private_key)
            _write_private_key(path, kid, private_key)
            index = _Index(
                format=INDEX_FORMAT,
                current=kid,
                keys=[_KeyEntry(id=kid, algorithm=alg, created=_epoch(created))],
            )
            _write_index(path, index)
        return cls(path, index, {kid: private_key}, now)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], now: datetime | None = None) -> FactoryKeyring:
        """Read the key ring; keys whose grace ended before ``now`` are dropped and deleted."""
        path = Path(directory)
        if not (path / INDEX_NAME).is_file():
            raise CredentialError(
                f"no factory key ring in {path} ({INDEX_NAME} missing); "
                f"create one with `gwms key generate --dir {path}`"
            )
        with _locked(path):
            index = _read_index(path)
            index = _prune(path, index, _utc(now))
            private_keys = {entry.id: _read_private_key(path, entry) for entry in index.keys}
        return cls(path, index, private_keys, now)

    def rotate(
        self,
        grace: timedelta = DEFAULT_GRACE,
        *,
        algorithm: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Make a new current key; the previous one keeps opening envelopes for ``grace``.

        Returns the new key id. The algorithm defaults to the current key's.
        """
        if grace < timedelta(0):
            raise CredentialError(
                f"rotation grace period {grace} is negative; give zero or more hours"
            )
        at = _utc(now if now is not None else self._now)
        with _locked(self.directory):
            # Re-read: another process may have rotated since this ring was loaded.
            index = _prune(self.directory, _read_index(self.directory), at)
            current = next(e for e in index.keys if e.id == index.current)
            alg = _algorithm(algorithm) if algorithm else current.algorithm
            previous = _read_private_key(self.directory, current)
            bits = (
                previous.key_size if isinstance(previous, rsa.RSAPrivateKey) else DEFAULT_RSA_BITS
            )
            private_key = _new_private_key(alg, bits)
            kid = key_id(private_key)
            _write_private_key(self.directory, kid, private_key)
            retires = _epoch(at + grace)
            keys = [
                e.model_copy(update={"retires": retires}) if e.id == current.id else e
                for e in index.keys
            ]
            keys.append(_KeyEntry(id=kid, algorithm=alg, created=_epoch(at)))
            new_index = _Index(format=INDEX_FORMAT, current=kid, keys=keys)
            _write_index(self.directory, new_index)
            private_keys = {e.id: _read_private_key(self.directory, e) for e in keys if e.id != kid}
            private_keys[kid] = private_key
        self._index = new_index
        self._private = private_keys
        return kid

    # -- queries --------------------------------------------------------------------------

    @property
    def current_key_id(self) -> str:
        return self._index.current

    @property
    def keys(self) -> list[KeyInfo]:
        """Every key still held, current first, then by retirement time."""
        infos = [
            KeyInfo(
                id=e.id,
                algorithm=e.algorithm,
                created=_from_epoch(e.created),
                retires=_from_epoch(e.retires) if e.retires is not None else None,
                public_key=self._private[e.id].public_key(),
            )
            for e in self._index.keys
        ]
        return sorted(infos, key=lambda k: (not k.current, k.retires or k.created))

    def public_key(self, key_id: str | None = None) -> PublicKey:
        """The public key to seal to (the current one unless ``key_id`` is given)."""
        return self.private_key_for(key_id or self.current_key_id).public_key()

    def public_key_pem(self, key_id: str | None = None) -> str:
        """The PEM the entry ad publishes (the current key unless ``key_id`` is given)."""
        return _public_pem(self.public_key(key_id))

    def private_key_for(self, key_id: str) -> PrivateKey:
        """The private key for an envelope's key id; SealError if not held or past its grace."""
        entry = next((e for e in self._index.keys if e.id == key_id), None)
        now = _epoch(_utc(self._now))
        if entry is None or (entry.retires is not None and entry.retires <= now):
            raise SealError(
                f"sealed to key {key_id}, which this factory does not hold "
                f"(current: {self.current_key_id}; {self._retiring_summary(now)}); "
                "have the frontend re-seal with the key in the factory's current entry ad",
                "unknown_key",
            )
        return self._private[key_id]

    def _retiring_summary(self, now: int) -> str:
        retiring = [
            f"{e.id} until {_iso(e.retires)}"
            for e in self._index.keys
            if e.retires is not None and e.retires > now
        ]
        if not retiring:
            return "previous keys expire at the end of their rotation grace period"
        return "previous keys expire: " + ", ".join(retiring)


# -- files ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive flock on the directory itself: needs no lock file, works read-only."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise CredentialError(
            f"cannot open key directory {directory}: {exc.strerror}; check the path and "
            "that it is readable by the factory user"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file created with ``mode``, fsync, rename, fsync the directory."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a public file is widened before any byte is written.
        if mode != 0o600:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _key_path(directory: Path, kid: str) -> Path:
    return directory / f"key-{kid}.pem"


def _write_private_key(directory: Path, kid: str, private_key: PrivateKey) -> None:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _atomic_write(_key_path(directory, kid), pem, 0o600)


def _write_index(directory: Path, index: _Index) -> None:
    text = json.dumps(index.model_dump(), indent=2, sort_keys=True) + "\n"
    _atomic_write(directory / INDEX_NAME, text.encode(), 0o644)


def _read_index(directory: Path) -> _Index:
    path = directory / INDEX_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CredentialError(
            f"cannot read {path}: {exc.strerror}; check it is readable by the factory user"
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CredentialError(
            f"{path} is not valid JSON ({exc}); restore it from a backup, or move the "
            f"directory away and run `gwms key generate --dir {directory}`"
        ) from exc
    try:
        index = _Index.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise CredentialError(
            f"{path}: field {where}: {first['msg']}; restore the file from a backup, or move "
            f"the directory away and run `gwms key generate --dir {directory}`"
        ) from None
    ids = [e.id for e in index.keys]
    if len(set(ids)) != len(ids) or index.current not in ids:
        raise CredentialError(
            f"{path}: 'current' must name exactly one listed key and ids must be unique; "
            "restore the file from a backup"
        )
    if any(e.retires is not None for e in index.keys if e.id == index.current):
        raise CredentialError(
            f"{path}: the current key {index.current} has a retirement time; "
            "restore the file from a backup"
        )
    return index


def _read_private_key(directory: Path, entry: _KeyEntry) -> PrivateKey:
    path = _key_path(directory, entry.id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CredentialError(
            f"key file {path} listed in {directory / INDEX_NAME} cannot be opened "
            f"({exc.strerror}); restore it from a backup or rotate to a new key"
        ) from exc
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            raise CredentialError(
                f"key file {path} is accessible by group or others (mode {mode:04o}); "
                f"run `chmod 600 {path}` and rotate the key if others may have read it"
            )
        data = handle.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CredentialError(
            f"key file {path} is not an unencrypted PEM private key; restore it from a backup "
            "or rotate to a new key"
        ) from None
    if not isinstance(key, x25519.X25519PrivateKey | rsa.RSAPrivateKey):
        raise CredentialError(
            f"key file {path} holds a {type(key).__name__}; factory keys are X25519 or RSA"
        )
    if key_id(key) != entry.id or algorithm_of(key) != entry.algorithm:
        raise CredentialError(
            f"key file {path} does not hold key {entry.id} ({entry.algorithm}) named in "
            f"{directory / INDEX_NAME}; restore the right file from a backup"
        )
    return key


def _prune(directory: Path, index: _Index, now: datetime) -> _Index:
    """Drop keys past their grace: index first, then the files (a crash leaves an orphan)."""
    cutoff = _epoch(now)
    expired = [e for e in index.keys if e.retires is not None and e.retires <= cutoff]
    if not expired:
        return index
    kept = [e for e in index.keys if e not in expired]
    pruned = _Index(format=INDEX_FORMAT, current=index.current, keys=kept)
    try:
        _write_index(directory, pruned)
        for entry in expired:
            with contextlib.suppress(FileNotFoundError):
                _key_path(directory, entry.id).unlink()
    except PermissionError:
        # A reader without write access (e.g. `gwms key show` as another user) still
        # sees the right keys; the owner's next load or rotate deletes the files.
        pass
    return pruned


# -- small helpers ----------------------------------------------------------------------------


def _algorithm(name: str) -> str:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise CredentialError(f"unknown key algorithm {name!r}; use one of: x25519, rsa") from None


def _new_private_key(algorithm: str, rsa_bits: int) -> PrivateKey:
    if algorithm == ALG_X25519:
        return x25519.X25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)


def _public_pem(public_key: PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _iso(seconds: int) -> str:
    return _from_epoch(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")
