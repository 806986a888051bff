"""Seal bytes to the factory's published public key; only the factory's private key opens them.

Frontends put identities and credentials in ClassAds that many parties can read, so
they are sealed with hybrid authenticated encryption (DESIGN.md §4 "Sealing"):

- ``x25519``: an ephemeral X25519 key agreement with the factory key, HKDF-SHA256
  (salt: both public keys; info: version, algorithm and recipient key id) -> AES-256-GCM;
- ``rsa-oaep``: a random AES-256-GCM key wrapped with RSA-OAEP(SHA-256), the header
  as the OAEP label.

The envelope is one ASCII line, safe inside a ClassAd string::

    gwms-seal:1:<algorithm>:<key id>:<base64url body, no padding>

The body is ``ephemeral public key (32) | nonce (12) | ciphertext+tag`` for x25519 and
``wrapped key length (2, big endian) | wrapped key | nonce (12) | ciphertext+tag`` for
rsa-oaep. The header and the caller's ``context`` are authenticated as AES-GCM AAD, so an
envelope cannot be re-labelled or moved to another factory or ad type.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from typing import Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gwms.errors import CredentialError

PREFIX = "gwms-seal"
VERSION = 1
SUPPORTED_VERSIONS = (VERSION,)
ALG_X25519 = "x25519"
ALG_RSA_OAEP = "rsa-oaep"
SUPPORTED_ALGORITHMS = (ALG_RSA_OAEP, ALG_X25519)
MIN_RSA_BITS = 2048
# Envelopes travel in ClassAds; anything this large is not ours (100 KB payloads are ~140 K chars).
MAX_ENVELOPE_CHARS = 4 * 1024 * 1024

_NONCE_BYTES = 12
_TAG_BYTES = 16
_X25519_BYTES = 32
_KEY_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")
_FORMAT_HINT = f"expected {PREFIX}:<version>:<algorithm>:<key id>:<data>"

PublicKey = x25519.X25519PublicKey | rsa.RSAPublicKey
PrivateKey = x25519.X25519PrivateKey | rsa.RSAPrivateKey
SealReason = Literal["malformed", "unsupported", "unknown_key", "authentication"]


class SealError(CredentialError):
    """A sealed envelope cannot be opened (or a key cannot seal); ``reason`` says which kind."""

    def __init__(self, message: str, reason: SealReason) -> None:
        super().__init__(message)
        self.reason: SealReason = reason


class KeyResolver(Protocol):
    """What `open_sealed` needs from a key ring: the private key for a key id, or SealError."""

    def private_key_for(self, key_id: str) -> PrivateKey: ...


def key_id(public_key: PublicKey | PrivateKey) -> str:
    """The key id published with the key: first 16 hex of sha256 of the public key DER."""
    if isinstance(public_key, x25519.X25519PrivateKey | rsa.RSAPrivateKey):
        public_key = public_key.public_key()
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def algorithm_of(key: PublicKey | PrivateKey) -> str:
    """The envelope algorithm name for a key ('x25519' or 'rsa-oaep')."""
    if isinstance(key, x25519.X25519PublicKey | x25519.X25519PrivateKey):
        return ALG_X25519
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return ALG_RSA_OAEP
    raise SealError(
        f"key type {type(key).__name__} cannot seal or open envelopes; "
        f"use an X25519 or RSA (>= {MIN_RSA_BITS} bit) factory key",
        "unsupported",
    )


def load_public_key(pem: str | bytes) -> PublicKey:
    """Parse the PEM public key an entry ad publishes; reject types we cannot seal to."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SealError(
            "the factory public key is not a valid PEM public key; "
            "copy it again from the entry ad or `gwms key show`",
            "malformed",
        ) from exc
    if not isinstance(key, x25519.X25519PublicKey | rsa.RSAPublicKey):
        raise SealError(
            f"the factory public key is a {type(key).__name__}, which cannot be sealed to; "
            "the factory must publish an X25519 or RSA key",
            "unsupported",
        )
    return key


def seal(
    payload: bytes, recipient_public_key: PublicKey | str | bytes, *, context: bytes = b""
) -> str:
    """Encrypt and authenticate ``payload`` for the private key's holder; returns the envelope."""
    key = (
        load_public_key(recipient_public_key)
        if isinstance(recipient_public_key, str | bytes)
        else recipient_public_key
    )
    algorithm = algorithm_of(key)
    kid = key_id(key)
    header = f"{PREFIX}:{VERSION}:{algorithm}:{kid}"
    aad = _aad(header, context)
    nonce = os.urandom(_NONCE_BYTES)
    if isinstance(key, x25519.X25519PublicKey):
        ephemeral = x25519.X25519PrivateKey.generate()
        ephemeral_raw = _raw(ephemeral.public_key())
        content_key = _derive_x25519(ephemeral.exchange(key), ephemeral_raw, _raw(key), kid)
        body = ephemeral_raw + nonce + AESGCM(content_key).encrypt(nonce, payload, aad)
    else:
        _check_rsa_size(key.key_size)
        content_key = AESGCM.generate_key(bit_length=256)
        wrapped = key.encrypt(content_key, _oaep(header))
        ciphertext = AESGCM(content_key).encrypt(nonce, payload, aad)
        body = len(wrapped).to_bytes(2, "big") + wrapped + nonce + ciphertext
    return f"{header}:{_b64encode(body)}"


def open_sealed(
    envelope: str, keyring_or_private_key: KeyResolver | PrivateKey, *, context: bytes = b""
) -> bytes:
    """Check and decrypt an envelope made by `seal`; any doubt raises SealError, never garbage."""
    header, algorithm, kid, body = _parse(envelope)
    private_key = _resolve(keyring_or_private_key, kid)
    if algorithm_of(private_key) != algorithm:
        raise SealError(
            f"sealed envelope claims algorithm {algorithm} but key {kid} is "
            f"{algorithm_of(private_key)}: it was altered; ask the frontend to re-seal it",
            "authentication",
        )
    aad = _aad(header, context)
    if isinstance(private_key, x25519.X25519PrivateKey):
        content_key, nonce, ciphertext = _unwrap_x25519(private_key, body, kid)
    else:
        content_key, nonce, ciphertext = _unwrap_rsa(private_key, body, header, kid)
    try:
        return AESGCM(content_key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise _auth_failed(kid) from None


def _parse(envelope: str) -> tuple[str, str, str, bytes]:
    if not isinstance(envelope, str) or len(envelope) > MAX_ENVELOPE_CHARS:
        raise _malformed("it is not a string of reasonable size")
    parts = envelope.strip().split(":")
    if len(parts) != 5 or parts[0] != PREFIX:
        raise _malformed(f"it does not have the form {_FORMAT_HINT}")
    _, version, algorithm, kid, data = parts
    if version != str(VERSION):
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise SealError(
            f"sealed envelope has format version {version[:16]!r}, but this gwms opens only "
            f"version {supported}; upgrade gwms on the factory or have the frontend seal "
            f"with version {VERSION}",
            "unsupported",
        )
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise SealError(
            f"sealed envelope uses algorithm {algorithm[:32]!r}, which this gwms does not "
            f"support (supported: {', '.join(SUPPORTED_ALGORITHMS)}); have the frontend seal "
            "to the key the factory publishes",
            "unsupported",
        )
    if not _KEY_ID_RE.match(kid):
        raise _malformed("its key id is not 16 lowercase hex characters")
    body = _b64decode(data)
    return f"{PREFIX}:{version}:{algorithm}:{kid}", algorithm, kid, body


def _resolve(keyring_or_private_key: KeyResolver | PrivateKey, kid: str) -> PrivateKey:
    if isinstance(keyring_or_private_key, x25519.X25519PrivateKey | rsa.RSAPrivateKey):
        have = key_id(keyring_or_private_key)
        if have != kid:
            raise SealError(
                f"sealed to key {kid}, but the private key given is {have}; "
                "open it with the matching factory key",
                "unknown_key",
            )
        return keyring_or_private_key
    return keyring_or_private_key.private_key_for(kid)


def _unwrap_x25519(
    private_key: x25519.X25519PrivateKey, body: bytes, kid: str
) -> tuple[bytes, bytes, bytes]:
    if len(body) < _X25519_BYTES + _NONCE_BYTES + _TAG_BYTES:
        raise _malformed("its data is too short for an x25519 envelope")
    ephemeral_raw = body[:_X25519_BYTES]
    nonce = body[_X25519_BYTES : _X25519_BYTES + _NONCE_BYTES]
    try:
        shared = private_key.exchange(x25519.X25519PublicKey.from_public_bytes(ephemeral_raw))
    except ValueError:  # a low-order point gives an all-zero secret: only a forger sends one
        raise _auth_failed(kid) from None
    content_key = _derive_x25519(shared, ephemeral_raw, _raw(private_key.public_key()), kid)
    return content_key, nonce, body[_X25519_BYTES + _NONCE_BYTES :]


def _unwrap_rsa(
    private_key: rsa.RSAPrivateKey, body: bytes, header: str, kid: str
) -> tuple[bytes, bytes, bytes]:
    if len(body) < 2:
        raise _malformed("its data is too short for an rsa-oaep envelope")
    wrapped_len = int.from_bytes(body[:2], "big")
    if wrapped_len != private_key.key_size // 8:
        raise _malformed(
            f"its wrapped key is {wrapped_len} bytes, key {kid} needs {private_key.key_size // 8}"
        )
    rest = body[2 + wrapped_len :]
    if len(rest) < _NONCE_BYTES + _TAG_BYTES:
        raise _malformed("its data is too short for an rsa-oaep envelope")
    try:
        content_key = private_key.decrypt(body[2 : 2 + wrapped_len], _oaep(header))
    except ValueError:
        raise _auth_failed(kid) from None
    if len(content_key) != 32:
        raise _auth_failed(kid)
    return content_key, rest[:_NONCE_BYTES], rest[_NONCE_BYTES:]


def _derive_x25519(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes, kid: str) -> bytes:
    info = f"{PREFIX}/{VERSION}/{ALG_X25519}/{kid}".encode()
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=ephemeral_raw + recipient_raw, info=info
    ).derive(shared)


def _oaep(header: str) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()),
        algorithm=hashes.SHA256(),
        label=header.encode(),
    )


def _aad(header: str, context: bytes) -> bytes:
    # The header never contains NUL, so header + NUL + context is unambiguous.
    return header.encode() + b"\x00" + bytes(context)


def _raw(public_key: x25519.X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_rsa_size(bits: int) -> None:
    if bits < MIN_RSA_BITS:
        raise SealError(
            f"the factory RSA key has {bits} bits, fewer than the {MIN_RSA_BITS} required; "
            "the factory must rotate to a stronger key (`gwms key rotate`)",
            "unsupported",
        )


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64URL_RE.match(text) or len(text) % 4 == 1:
        raise _malformed("its data is not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _malformed("its data is not unpadded base64url") from None
    # Only the canonical encoding is accepted, so every character of an envelope is significant.
    if _b64encode(data) != text:
        raise _malformed("its data is not canonical base64url")
    return data


def _malformed(detail: str) -> SealError:
    return SealError(
        f"sealed envelope is malformed: {detail} ({_FORMAT_HINT}); "
        "ask the frontend to re-seal it with the factory's current public key",
        "malformed",
    )


def _auth_failed(kid: str) -> SealError:
    return SealError(
        f"sealed envelope for key {kid} failed authentication: it was altered, truncated or "
        "sealed for another factory or ad; ask the frontend to re-seal it",
        "authentication",
    )
