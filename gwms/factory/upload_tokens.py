"""Per-batch upload tokens: what lets a glidein VM upload its logs and status, and nothing else.

A token names the entry, client and batch it was issued for and when it expires, and is
signed with HMAC-SHA256 under a factory secret, so the web service checks it without any
table: `gwu1.<base64url JSON [entry, client, batch, expires]>.<base64url MAC>`. Carrying its
claims lets the service tell "not ours or expired" (401) from "ours, but for another
batch" (403). The secret lives in a 0600 file in the state dir, created on first use.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from datetime import datetime
from pathlib import Path

from gwms.errors import CredentialError

PREFIX = "gwu1"
SECRET_FILE = "upload-token.key"  # noqa: S105 - a file name, not a secret
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
MAX_TOKEN_LENGTH = 2048
_MAC_CONTEXT = b"gwms-upload-token/1\x00"


class TokenCheck(enum.Enum):
    """Why a token is accepted or not; the web service maps these to 2xx, 401 and 403."""

    VALID = "valid"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad signature"
    EXPIRED = "expired"
    OTHER_BATCH = "issued for another entry, client or batch"


def issue(secret: bytes, entry: str, client: str, batch_id: str, expires_at: datetime | int) -> str:
    """A token that lets the VMs of one batch upload until `expires_at` (UTC)."""
    _check_secret(secret)
    claims = json.dumps([entry, client, batch_id, _epoch(expires_at)], separators=(",", ":"))
    body = _b64encode(claims.encode())
    return f"{PREFIX}.{body}.{_b64encode(_mac(secret, body))}"


def check(  # noqa: PLR0917 - the documented positional API
    secret: bytes,
    token: str,
    entry: str,
    client: str,
    batch_id: str,
    now: datetime | float,
) -> TokenCheck:
    """Verify the signature (constant time), then the expiry, then that the claims match."""
    claims = _signed_claims(secret, token)
    if isinstance(claims, TokenCheck):
        return claims
    *names, expires = claims
    if _epoch(now) >= expires:
        return TokenCheck.EXPIRED
    if names != [entry, client, batch_id]:
        return TokenCheck.OTHER_BATCH
    return TokenCheck.VALID


def verify(  # noqa: PLR0917 - the documented positional API
    secret: bytes,
    token: str,
    entry: str,
    client: str,
    batch_id: str,
    now: datetime | float,
) -> bool:
    """True when `token` was issued for this entry, client and batch and has not expired."""
    return check(secret, token, entry, client, batch_id, now) is TokenCheck.VALID


def load_secret(state_dir: Path) -> bytes:
    """The factory's upload-token secret from `<state_dir>/upload-token.key`, made on first use.

    The file is created 0600 under a temporary name and linked into place, so a racing
    process either sees the complete file or creates its own first.
    """
    path = state_dir / SECRET_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_secret(path)
    return _read_secret(path)


def _create_secret(path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use it
            os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _read_secret(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise CredentialError(
            f"{path}: cannot read the upload-token secret ({exc.strerror}); check its owner"
            " and permissions, or delete it to make a new one (outstanding tokens stop working)."
        ) from exc
    if stat.S_IMODE(mode) & 0o077:
        raise CredentialError(
            f"{path}: the upload-token secret is readable by other users; run chmod 600 on it."
        )
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) < MIN_SECRET_BYTES:
        raise CredentialError(
            f"{path}: not an upload-token secret (base64 of at least {MIN_SECRET_BYTES} bytes);"
            " delete it to make a new one (outstanding tokens stop working)."
        )
    return secret


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"upload-token secret must be at least {MIN_SECRET_BYTES} bytes")


def _signed_claims(secret: bytes, token: str) -> list[str | int] | TokenCheck:
    """The token's claims if we signed it, else why not."""
    _check_secret(secret)
    parts = token.split(".") if len(token) <= MAX_TOKEN_LENGTH else []
    if len(parts) != 3 or parts[0] != PREFIX:
        return TokenCheck.MALFORMED
    _, body, mac = parts
    try:
        given = _b64decode(mac)
    except ValueError:
        return TokenCheck.MALFORMED
    if not hmac.compare_digest(given, _mac(secret, body)):
        return TokenCheck.BAD_SIGNATURE
    claims = _claims(body)
    # Signed by us but unreadable can only be another format version.
    return TokenCheck.MALFORMED if claims is None else claims


def _mac(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, _MAC_CONTEXT + body.encode(), hashlib.sha256).digest()


def _claims(body: str) -> list[str | int] | None:
    try:
        value = json.loads(_b64decode(body))
    except (ValueError, UnicodeDecodeError):
        return None
    shape_ok = (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(name, str) for name in value[:3])
        and isinstance(value[3], int)
        and not isinstance(value[3], bool)
    )
    return value if shape_ok else None


def _epoch(when: datetime | float) -> int:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware (UTC)")
        return int(when.timestamp())
    return int(when)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    if not text or not all(c.isalnum() or c in "-_" for c in text) or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


__all__ = ["TokenCheck", "check", "issue", "load_secret", "verify"]
