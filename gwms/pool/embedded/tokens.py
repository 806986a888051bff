"""Bearer tokens of the embedded collector: a YAML file of identity -> sha256(token).

The file holds only hashes, so reading it does not reveal a token; tokens are random,
shown once when created, and compared by hash in constant time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
from pathlib import Path

import yaml

from gwms.errors import ConfigError, CredentialError

IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*\Z")
SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")


def hash_token(token: str) -> str:
    """The hex sha256 of a token, the only form the server keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(path: Path) -> dict[str, str]:
    """Read and validate a tokens file; an absent file is an error (the operator named it)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the tokens file ({exc.strerror}); create it with "
            "`gwms collector add-token`."
        ) from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path}: not valid YAML ({exc}); fix or recreate the tokens file."
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of identity to sha256 hex of its token.")
    for identity, digest in data.items():
        if not isinstance(identity, str) or not IDENTITY.match(identity):
            raise ConfigError(
                f"{path}: {identity!r} is not a valid identity (e.g. vo1-frontend@example.org)."
            )
        if not isinstance(digest, str) or not SHA256_HEX.match(digest):
            raise ConfigError(
                f"{path}: the value for {identity!r} is not a sha256 hex digest; "
                "recreate it with `gwms collector add-token --replace`."
            )
    return dict(data)


def add_token(path: Path, identity: str, *, replace: bool = False) -> str:
    """Create a random token for `identity`, store its hash in `path` (0600), return the token."""
    if not IDENTITY.match(identity):
        raise ConfigError(
            f"identity {identity!r} is not valid; use letters, digits and ._@+- "
            "(e.g. vo1-frontend@example.org)."
        )
    tokens = load_tokens(path) if path.exists() else {}
    if identity in tokens and not replace:
        raise ConfigError(
            f"{path}: identity {identity!r} already has a token; pass --replace to issue a new one."
        )
    token = secrets.token_urlsafe(32)
    tokens[identity] = hash_token(token)
    _write_private(path, yaml.safe_dump(tokens, sort_keys=True))
    return token


def _write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with a file created 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_token_file(path: Path, token: str) -> None:
    """Write a client token file, created 0600."""
    _write_private(path, token + "\n")


def read_token_file(path: Path) -> str:
    """Read a client token file written by `add-token --token-out` (or by hand)."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read the token file ({exc.strerror}).") from exc
    if not token:
        raise CredentialError(
            f"{path}: the token file is empty; write the token from add-token in it."
        )
    return token


class TokenAuth:
    """Maps a bearer token to its identity; re-reads the file when it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime = -1.0
        self._hashes: list[tuple[str, bytes]] = []
        self._reload()

    def _reload(self) -> None:
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            tokens = load_tokens(self.path)
            self._hashes = [(identity, bytes.fromhex(d)) for identity, d in tokens.items()]
            self._mtime = mtime

    def identify(self, token: str) -> str | None:
        """The identity whose token this is, or None; every entry is compared (constant time)."""
        with self._lock:
            # On a broken file keep serving the last good one; a restart shows the error.
            with contextlib.suppress(OSError, ConfigError):
                self._reload()
            hashes = self._hashes
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for identity, expected in hashes:
            if hmac.compare_digest(digest, expected):
                found = identity
        return found
