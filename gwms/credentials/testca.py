"""A throwaway certificate authority and user certificates, for tests and the local demo.

Nothing here is meant for production trust: keys are generated in memory, the CA
signs whatever it is asked to. The certificates carry the extensions a real grid
CA puts in (basicConstraints, keyUsage, SKI/AKI) so `openssl verify` and the
Globus tools accept the chains built on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Grid CAs name people under domain components; tests look like that too.
_BASE_NAME = (
    x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org"),
    x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "gwms-cloud-test"),
)
_KEY_SIZE = 2048


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)


def make_ca(subject_cn: str, days: int = 365) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed CA certificate valid from now for `days` days, and its key."""
    key = _new_key()
    name = x509.Name([*_BASE_NAME, x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    start = _now() - timedelta(minutes=5)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_user_cert(
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    cn: str,
    hours: float,
    not_before: datetime | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A user (end-entity) certificate signed by the CA, valid `hours` from `not_before` (now).

    Pass a `not_before` in the past or the future to make expired or not-yet-valid
    certificates for tests.
    """
    key = _new_key()
    start = (not_before or _now()).astimezone(UTC)
    name = x509.Name(
        [
            *_BASE_NAME,
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "People"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(hours=hours))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@dataclass(frozen=True)
class TestPki:
    """Where `write_test_pki` put the files (the keys are 0600)."""

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    ca_cert: Path
    ca_key: Path
    user_cert: Path
    user_key: Path


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to a new file created with `mode` (replacing any old file)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def write_test_pki(
    directory: str | os.PathLike[str], user_cn: str = "gwms test user", hours: float = 24 * 30
) -> TestPki:
    """Make a CA and one user certificate and write them as PEM files under `directory`."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca("gwms-cloud test CA")
    user_cert, user_key = make_user_cert(ca_cert, ca_key, user_cn, hours)
    pki = TestPki(
        directory=root,
        ca_cert=root / "ca.pem",
        ca_key=root / "cakey.pem",
        user_cert=root / "usercert.pem",
        user_key=root / "userkey.pem",
    )
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(pki.ca_key, _key_pem(ca_key), 0o600)
    _write(pki.user_cert, user_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(pki.user_key, _key_pem(user_key), 0o600)
    return pki
