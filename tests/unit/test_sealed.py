"""Sealing: only the factory key opens an envelope, and any change to it is detected."""

from __future__ import annotations

import base64
import os

import classad2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from gwms.credentials.sealed import (
    SealError,
    key_id,
    load_public_key,
    open_sealed,
    seal,
)
from gwms.errors import CredentialError

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
CONTEXT = b"factory=gfactory-local;ad=glideclientglobal"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def x25519_key() -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.generate()


@pytest.fixture(params=["x25519", "rsa"])
def private_key(
    request: pytest.FixtureRequest,
    x25519_key: x25519.X25519PrivateKey,
    rsa_key: rsa.RSAPrivateKey,
) -> x25519.X25519PrivateKey | rsa.RSAPrivateKey:
    return x25519_key if request.param == "x25519" else rsa_key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("size", [0, 1, 100 * 1024])
def test_sealed_payload_opens_to_the_same_bytes_with_the_recipient_key(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey, size: int
) -> None:
    payload = os.urandom(size)
    envelope = seal(payload, private_key.public_key(), context=CONTEXT)
    assert open_sealed(envelope, private_key, context=CONTEXT) == payload


def test_envelope_names_version_algorithm_and_recipient_key_id(
    x25519_key: x25519.X25519PrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    x_env = seal(b"p", x25519_key.public_key())
    r_env = seal(b"p", rsa_key.public_key())
    assert x_env.startswith(f"gwms-seal:1:x25519:{key_id(x25519_key)}:")
    assert r_env.startswith(f"gwms-seal:1:rsa-oaep:{key_id(rsa_key)}:")


def test_key_id_is_first_16_hex_of_sha256_of_public_key_der(
    x25519_key: x25519.X25519PrivateKey,
) -> None:
    import hashlib

    der = x25519_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(x25519_key) == hashlib.sha256(der).hexdigest()[:16]
    assert key_id(x25519_key.public_key()) == key_id(x25519_key)


def test_sealing_the_same_payload_twice_gives_different_envelopes(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey,
) -> None:
    first = seal(b"same", private_key.public_key())
    second = seal(b"same", private_key.public_key())
    assert first != second
    assert b"same" not in _unb64(first.rsplit(":", 1)[1])


def test_envelope_survives_a_classad_string_attribute_unchanged(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey,
) -> None:
    envelope = seal(os.urandom(300), private_key.public_key(), context=CONTEXT)
    assert envelope.isascii()
    ad = classad2.ClassAd()
    ad["GlideinSealedCredential"] = envelope
    reparsed = classad2.parseOne(str(ad))
    assert reparsed["GlideinSealedCredential"] == envelope


def test_seal_accepts_the_pem_that_the_entry_ad_publishes(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey,
) -> None:
    pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    envelope = seal(b"payload", pem.decode())
    assert open_sealed(envelope, private_key) == b"payload"


def test_flipping_any_character_of_the_envelope_is_refused(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey,
) -> None:
    envelope = seal(b"credential bytes " * 4, private_key.public_key(), context=CONTEXT)
    for position, char in enumerate(envelope):
        alphabet = B64URL if char in B64URL else B64URL + ":"
        replacement = (
            alphabet[(alphabet.index(char) + 1) % len(alphabet)] if char in alphabet else "x"
        )
        tampered = envelope[:position] + replacement + envelope[position + 1 :]
        with pytest.raises(SealError):
            open_sealed(tampered, private_key, context=CONTEXT)


def _regions(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey, body_len: int
) -> dict[str, tuple[int, int]]:
    """Byte ranges of each part of the decoded body, as documented in sealed.py."""
    if isinstance(private_key, x25519.X25519PrivateKey):
        return {
            "ephemeral key": (0, 32),
            "nonce": (32, 44),
            "ciphertext": (44, body_len - 16),
            "tag": (body_len - 16, body_len),
        }
    wrapped = private_key.key_size // 8
    return {
        "wrapped key length": (0, 2),
        "wrapped key": (2, 2 + wrapped),
        "nonce": (2 + wrapped, 14 + wrapped),
        "ciphertext": (14 + wrapped, body_len - 16),
        "tag": (body_len - 16, body_len),
    }


def test_flipping_a_bit_in_every_region_of_the_body_fails_authentication(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey,
) -> None:
    envelope = seal(b"x" * 64, private_key.public_key(), context=CONTEXT)
    header, data = envelope.rsplit(":", 1)
    body = _unb64(data)
    for region, (start, end) in _regions(private_key, len(body)).items():
        for offset in {start, (start + end) // 2, end - 1}:
            tampered = bytearray(body)
            tampered[offset] ^= 0x01
            with pytest.raises(SealError) as info:
                open_sealed(f"{header}:{_b64(bytes(tampered))}", private_key, context=CONTEXT)
            expected = "malformed" if region == "wrapped key length" else "authentication"
            assert info.value.reason == expected, (region, offset)


def test_truncated_or_extended_body_is_refused(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey,
) -> None:
    envelope = seal(b"payload", private_key.public_key())
    header, data = envelope.rsplit(":", 1)
    body = _unb64(data)
    for changed in (body[:-1], body + b"\x00", body[:10], b""):
        with pytest.raises(SealError):
            open_sealed(f"{header}:{_b64(changed)}", private_key)


def test_envelope_sealed_for_one_context_does_not_open_in_another(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey,
) -> None:
    envelope = seal(b"identity", private_key.public_key(), context=b"factory=A;ad=glideclient")
    with pytest.raises(SealError) as info:
        open_sealed(envelope, private_key, context=b"factory=B;ad=glideclient")
    assert info.value.reason == "authentication"
    assert "another factory or ad" in str(info.value)
    with pytest.raises(SealError):
        open_sealed(envelope, private_key)


def test_envelope_for_another_key_names_both_key_ids(
    private_key: x25519.X25519PrivateKey | rsa.RSAPrivateKey,
) -> None:
    other = x25519.X25519PrivateKey.generate()
    envelope = seal(b"secret", other.public_key())
    with pytest.raises(SealError) as info:
        open_sealed(envelope, private_key)
    assert info.value.reason == "unknown_key"
    assert key_id(other) in str(info.value)
    assert key_id(private_key) in str(info.value)


def test_envelope_relabelled_with_the_key_id_of_the_opener_fails_authentication(
    x25519_key: x25519.X25519PrivateKey,
) -> None:
    attacker_target = x25519.X25519PrivateKey.generate()
    envelope = seal(b"secret", attacker_target.public_key())
    relabelled = envelope.replace(key_id(attacker_target), key_id(x25519_key))
    with pytest.raises(SealError) as info:
        open_sealed(relabelled, x25519_key)
    assert info.value.reason == "authentication"


def test_envelope_relabelled_with_another_algorithm_is_refused(
    x25519_key: x25519.X25519PrivateKey,
) -> None:
    envelope = seal(b"secret", x25519_key.public_key())
    with pytest.raises(SealError) as info:
        open_sealed(envelope.replace(":x25519:", ":rsa-oaep:"), x25519_key)
    assert info.value.reason == "authentication"


@pytest.mark.parametrize(
    ("envelope", "reason", "phrase"),
    [
        ("", "malformed", "malformed"),
        ("not an envelope", "malformed", "gwms-seal:<version>"),
        ("gwms-seal:1:x25519:0123456789abcdef", "malformed", "malformed"),
        ("gwms-seal:2:x25519:0123456789abcdef:AAAA", "unsupported", "version '2'"),
        ("gwms-seal:1:chacha:0123456789abcdef:AAAA", "unsupported", "'chacha'"),
        ("gwms-seal:1:x25519:XYZ:AAAA", "malformed", "key id"),
        ("gwms-seal:1:x25519:0123456789abcdef:AA=A", "malformed", "base64url"),
        ("gwms-seal:1:x25519:0123456789abcdef:A", "malformed", "base64url"),
    ],
)
def test_bad_envelopes_get_a_clear_reason(
    x25519_key: x25519.X25519PrivateKey, envelope: str, reason: str, phrase: str
) -> None:
    with pytest.raises(SealError) as info:
        open_sealed(envelope, x25519_key)
    assert info.value.reason == reason
    assert phrase in str(info.value)
    assert "\n" not in str(info.value)


def test_non_canonical_base64_is_refused_even_if_it_decodes(
    x25519_key: x25519.X25519PrivateKey,
) -> None:
    envelope = seal(b"ab", x25519_key.public_key())
    header, data = envelope.rsplit(":", 1)
    # The last character of unpadded base64 carries unused low bits; setting one keeps
    # the decoded bytes but must still be refused.
    last = B64URL.index(data[-1])
    spare_bits = {2: 0b1111, 3: 0b11}[len(data) % 4]
    variant = B64URL[last | spare_bits] if last | spare_bits != last else B64URL[last & ~1]
    assert _unb64(data[:-1] + variant) == _unb64(data)
    with pytest.raises(SealError) as info:
        open_sealed(f"{header}:{data[:-1]}{variant}", x25519_key)
    assert info.value.reason == "malformed"


def test_seal_error_is_a_credential_error(x25519_key: x25519.X25519PrivateKey) -> None:
    with pytest.raises(CredentialError):
        open_sealed("garbage", x25519_key)


def test_rsa_keys_below_2048_bits_cannot_be_sealed_to() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(SealError, match="2048"):
        seal(b"p", weak.public_key())


def test_public_key_of_an_unsupported_type_is_refused_with_a_hint() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SealError, match="X25519 or RSA"):
        load_public_key(pem)
    with pytest.raises(SealError, match="not a valid PEM"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
