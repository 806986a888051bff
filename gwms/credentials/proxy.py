"""RFC 3820 X.509 proxy certificates: create, derive, load, write, inspect and check them.

A proxy file holds, in the order Globus and VOMS write it: the proxy certificate,
its private key, then the issuing chain (the issuer of the proxy first, the user's
end-entity certificate last, optionally followed by CA certificates).

`cryptography` has no class for the proxyCertInfo extension, so its small ASN.1
structure is DER-encoded and decoded by hand below and carried as an
`x509.UnrecognizedExtension`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gwms.errors import CredentialError

OID_PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
OID_PPL_INHERIT_ALL = x509.ObjectIdentifier("1.3.6.1.5.5.7.21.1")
OID_PPL_INDEPENDENT = x509.ObjectIdentifier("1.3.6.1.5.5.7.21.2")
OID_GLOBUS_LIMITED = x509.ObjectIdentifier("1.3.6.1.4.1.3536.1.1.1.9")

TYPE_IMPERSONATION = "RFC 3820 compliant impersonation proxy"
TYPE_LIMITED = "RFC 3820 compliant limited proxy"
TYPE_INDEPENDENT = "RFC 3820 compliant independent proxy"
TYPE_RESTRICTED = "RFC 3820 compliant restricted proxy"

# Proxies start a little in the past so a peer whose clock lags still accepts them.
CLOCK_SKEW = timedelta(minutes=5)

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --- ProxyCertInfo DER ---------------------------------------------------------
#
# ProxyCertInfo ::= SEQUENCE {
#     pCPathLenConstraint  INTEGER (0..MAX) OPTIONAL,
#     proxyPolicy          ProxyPolicy }
# ProxyPolicy ::= SEQUENCE {
#     policyLanguage       OBJECT IDENTIFIER,
#     policy               OCTET STRING OPTIONAL }

_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_OID = 0x06
_TAG_SEQUENCE = 0x30


@dataclass(frozen=True)
class ProxyCertInfo:
    """The decoded proxyCertInfo extension."""

    policy_language: x509.ObjectIdentifier
    path_length: int | None = None
    policy: bytes | None = None


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV: definite length, short form below 128 bytes, long form above."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _der_integer(value: int) -> bytes:
    # Non-negative only; one extra bit keeps the sign bit clear (0 encodes as 00).
    return _der(_TAG_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _der_oid(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(arc) for arc in oid.dotted_string.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return _der(_TAG_OID, bytes(body))


def encode_proxy_cert_info(info: ProxyCertInfo) -> bytes:
    """DER of a ProxyCertInfo, the value of the proxyCertInfo extension."""
    policy = _der_oid(info.policy_language)
    if info.policy is not None:
        policy += _der(_TAG_OCTET_STRING, info.policy)
    body = b"" if info.path_length is None else _der_integer(info.path_length)
    return _der(_TAG_SEQUENCE, body + _der(_TAG_SEQUENCE, policy))


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """Parse one TLV at `pos`: (tag, content, position after it)."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    else:
        size = first
    if pos + size > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos : pos + size], pos + size


def _decode_oid(body: bytes) -> x509.ObjectIdentifier:
    if not body or body[-1] & 0x80:
        raise ValueError("bad OID")
    first = min(body[0] // 40, 2)
    arcs = [first, body[0] - 40 * first]
    value = 0
    for byte in body[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return x509.ObjectIdentifier(".".join(map(str, arcs)))


def decode_proxy_cert_info(data: bytes) -> ProxyCertInfo:
    """Parse the DER of a ProxyCertInfo; ValueError when it is malformed."""
    tag, body, end = _read_tlv(data, 0)
    if tag != _TAG_SEQUENCE or end != len(data):
        raise ValueError("ProxyCertInfo is not one SEQUENCE")
    path_length = None
    tag, content, pos = _read_tlv(body, 0)
    if tag == _TAG_INTEGER:
        if not content or content[0] & 0x80:
            raise ValueError("negative pCPathLenConstraint")
        path_length = int.from_bytes(content, "big")
        tag, content, pos = _read_tlv(body, pos)
    if tag != _TAG_SEQUENCE or pos != len(body):
        raise ValueError("ProxyPolicy missing")
    tag, oid_body, pos = _read_tlv(content, 0)
    if tag != _TAG_OID:
        raise ValueError("policyLanguage missing")
    policy = None
    if pos < len(content):
        tag, policy, pos = _read_tlv(content, pos)
        if tag != _TAG_OCTET_STRING or pos != len(content):
            raise ValueError("bad policy")
    return ProxyCertInfo(_decode_oid(oid_body), path_length, policy)


def proxy_cert_info(cert: x509.Certificate) -> ProxyCertInfo | None:
    """The proxyCertInfo of `cert`, or None when it is not an RFC 3820 proxy."""
    try:
        ext = cert.extensions.get_extension_for_oid(OID_PROXY_CERT_INFO)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
    try:
        return decode_proxy_cert_info(raw)
    except ValueError as exc:
        raise CredentialError(
            f"the proxyCertInfo extension of {one_line_name(cert.subject)} is malformed ({exc}); "
            "make the proxy again"
        ) from exc


# --- names ----------------------------------------------------------------------

# OpenSSL's short names, as `grid-proxy-info` prints them in `/DC=org/CN=...` form.
_SHORT_NAMES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.STREET_ADDRESS: "street",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.TITLE: "title",
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
}


def one_line_name(name: x509.Name) -> str:
    """`name` in the OpenSSL one-line form grid tools print (`/DC=org/DC=x/CN=Alice`)."""
    parts = []
    for rdn in name.rdns:
        attrs = [
            f"{_SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)}={attr.value!s}" for attr in rdn
        ]
        parts.append("/" + "+".join(attrs))
    return "".join(parts)


# --- the proxy --------------------------------------------------------------------


@dataclass(frozen=True)
class Proxy:
    """A proxy certificate, its private key and its issuing chain (issuer first)."""

    cert: x509.Certificate
    key: SigningKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    clamped: bool = False
    source: str = "the proxy"

    def __repr__(self) -> str:
        return f"Proxy(subject={one_line_name(self.cert.subject)!r}, source={self.source!r})"

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """The proxy certificate followed by its chain."""
        return (self.cert, *self.chain)

    @property
    def limited(self) -> bool:
        info = proxy_cert_info(self.cert)
        return info is not None and info.policy_language == OID_GLOBUS_LIMITED

    def to_pem(self) -> bytes:
        """The proxy file contents: proxy certificate, unencrypted key, chain."""
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        parts = [self.cert.public_bytes(serialization.Encoding.PEM), key]
        parts.extend(cert.public_bytes(serialization.Encoding.PEM) for cert in self.chain)
        return b"".join(parts)


def _utc_now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe(certs: tuple[x509.Certificate, ...], index: int) -> str:
    """How an error names certificate `index` of a chain: its role and subject."""
    subject = one_line_name(certs[index].subject)
    if proxy_cert_info(certs[index]) is not None:
        role = "the proxy" if index == 0 else f"the issuing proxy (certificate {index + 1})"
    elif all(proxy_cert_info(c) is not None for c in certs[:index]):
        role = "the user certificate"
    else:
        role = f"the CA certificate (certificate {index + 1})"
    return f"{role} {subject}"


def _key_matches(cert: x509.Certificate, key: Any) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        mine = key.public_key().public_bytes(serialization.Encoding.DER, fmt)
    except AttributeError:
        return False
    return mine == cert.public_key().public_bytes(serialization.Encoding.DER, fmt)


def _check_key(cert: x509.Certificate, key: Any, source: str) -> None:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CredentialError(
            f"the private key in {source} is of an unsupported type "
            f"({type(key).__name__}); use an RSA or EC key"
        )
    if not _key_matches(cert, key):
        raise CredentialError(f"the private key in {source} does not belong to its certificate")


def _check_links(certs: tuple[x509.Certificate, ...], source: str) -> None:
    for index, (cert, issuer) in enumerate(itertools.pairwise(certs)):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CredentialError(
                f"broken chain in {source}: certificate {index + 1} "
                f"({one_line_name(cert.subject)}) was not issued by certificate {index + 2} "
                f"({one_line_name(issuer.subject)}); a proxy file lists the proxy, its key, "
                "then each issuer in order"
            ) from exc


def _check_proxy_rules(certs: tuple[x509.Certificate, ...], source: str) -> None:
    """Naming, delegation depth and limited-ness rules along the proxy part of the chain."""
    infos = [proxy_cert_info(cert) for cert in certs]
    proxies = 0
    while proxies < len(certs) and infos[proxies] is not None:
        proxies += 1
    if proxies == len(certs):
        raise CredentialError(
            f"the chain in {source} ends with a proxy and lacks the user certificate; "
            "make the proxy again from the user certificate and key"
        )
    for index in range(proxies - 1, -1, -1):
        cert, issuer, info = certs[index], certs[index + 1], infos[index]
        assert info is not None
        rdns = cert.subject.rdns
        last = rdns[-1] if rdns else None
        if (
            x509.Name(rdns[:-1]) != issuer.subject
            or last is None
            or len(last) != 1
            or next(iter(last)).oid != NameOID.COMMON_NAME
        ):
            raise CredentialError(
                f"{_describe(certs, index)} in {source} breaks the RFC 3820 naming rule "
                f"(its subject must be its issuer's subject plus one CN); make the proxy again"
            )
        with contextlib.suppress(x509.ExtensionNotFound):
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                raise CredentialError(
                    f"{_describe(certs, index)} in {source} claims to be a CA, "
                    "which a proxy must not; make the proxy again"
                )
        issuer_info = infos[index + 1]
        if (
            issuer_info is not None
            and issuer_info.policy_language == OID_GLOBUS_LIMITED
            and info.policy_language != OID_GLOBUS_LIMITED
        ):
            raise CredentialError(
                f"{_describe(certs, index)} in {source} is a full proxy issued by a limited "
                "proxy, which grid middleware rejects; derive it again as a limited proxy"
            )
        if info.path_length is not None and index > info.path_length:
            raise CredentialError(
                f"{_describe(certs, index)} in {source} allows {info.path_length} further "
                f"proxies below it but has {index}; make the proxy from an earlier link"
            )


def _check_validity(certs: tuple[x509.Certificate, ...], source: str, now: datetime) -> None:
    for index, cert in enumerate(certs):
        if now < cert.not_valid_before_utc:
            raise CredentialError(
                f"{_describe(certs, index)} in {source} is not valid yet: it starts at "
                f"{_when(cert.not_valid_before_utc)}; check the clocks or wait until then"
            )
        if now >= cert.not_valid_after_utc:
            action = (
                "make a new proxy"
                if proxy_cert_info(cert) is not None
                else "renew the certificate and make a new proxy"
            )
            raise CredentialError(
                f"{_describe(certs, index)} in {source} expired at "
                f"{_when(cert.not_valid_after_utc)}; {action}"
            )


def verify_chain(proxy: Proxy, now: datetime | None = None, *, check_validity: bool = True) -> None:
    """Structural checks of a proxy: key, chain links, RFC 3820 rules, validity windows.

    This is not trust verification (no CA store, no CRLs): it catches the broken
    input a site's verifier would reject, with a message saying which file and link.
    Raises `CredentialError`.
    """
    if proxy_cert_info(proxy.cert) is None:
        raise CredentialError(
            f"the first certificate in {proxy.source} ({one_line_name(proxy.cert.subject)}) is "
            "not an RFC 3820 proxy; make one with `gwms proxy init`"
        )
    _check_issuer(
        proxy.cert, proxy.key, proxy.chain, proxy.source, now, check_validity=check_validity
    )


def _check_issuer(
    cert: x509.Certificate,
    key: Any,
    chain: tuple[x509.Certificate, ...],
    source: str,
    now: datetime | None,
    *,
    check_validity: bool = True,
) -> None:
    """The checks shared by proxies and the user credentials a proxy is made from."""
    certs = (cert, *chain)
    _check_key(cert, key, source)
    _check_links(certs, source)
    _check_proxy_rules(certs, source)
    if check_validity:
        _check_validity(certs, source, _utc_now(now))


# --- creating --------------------------------------------------------------------


def _proxy_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def create_proxy(  # noqa: PLR0917 - the documented positional API
    cert: x509.Certificate,
    key: SigningKey,
    chain: tuple[x509.Certificate, ...] | list[x509.Certificate] = (),
    hours: float = 12,
    limited: bool = False,
    key_size: int = 2048,
    *,
    path_length: int | None = None,
    now: datetime | None = None,
    source: str = "the issuing credential",
) -> Proxy:
    """Sign a new RFC 3820 proxy with `key` for `cert` (a user certificate or a proxy).

    The lifetime is cut to what is left on the issuer and its chain (`Proxy.clamped`
    says so). A proxy issued by a limited proxy is always limited.
    """
    chain = tuple(chain)
    if not hours > 0:
        raise CredentialError(
            f"the proxy lifetime must be positive, got {hours:g} hours; ask for more than 0 hours"
        )
    if key_size < 1024:
        raise CredentialError(f"a proxy key of {key_size} bits is too weak; use 2048 or more")
    _check_issuer(cert, key, chain, source, now)
    issuer_info = proxy_cert_info(cert)
    if issuer_info is not None and issuer_info.policy_language == OID_GLOBUS_LIMITED:
        limited = True
    # The new proxy sits depth + 1 proxies below each proxy of the issuing chain.
    for depth, upper in enumerate((cert, *chain)):
        upper_info = proxy_cert_info(upper)
        if upper_info is None:
            break
        if upper_info.path_length is not None and depth + 1 > upper_info.path_length:
            raise CredentialError(
                f"the proxy in {source} forbids further delegation (path length "
                f"{upper_info.path_length} on {one_line_name(upper.subject)}); "
                "make the proxy from the user certificate instead"
            )
    start = _utc_now(now).replace(microsecond=0)
    wanted_end = start + timedelta(hours=hours)
    limit = min(c.not_valid_after_utc for c in (cert, *chain))
    not_after = min(wanted_end, limit)
    not_before = max(start - CLOCK_SKEW, cert.not_valid_before_utc)

    new_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    serial = secrets.randbits(63) | 1
    subject = x509.Name(
        [
            *cert.subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, str(serial))]),
        ]
    )
    language = OID_GLOBUS_LIMITED if limited else OID_PPL_INHERIT_ALL
    info_der = encode_proxy_cert_info(ProxyCertInfo(language, path_length))
    signature_hash = hashes.SHA256()
    new_cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(cert.subject)
        .public_key(new_key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.UnrecognizedExtension(OID_PROXY_CERT_INFO, info_der), critical=True)
        .add_extension(_proxy_key_usage(), critical=True)
        .sign(key, signature_hash)
    )
    return Proxy(
        cert=new_cert,
        key=new_key,
        chain=(cert, *chain),
        clamped=not_after < wanted_end,
        source="the new proxy",
    )


def derive_proxy(
    proxy: Proxy,
    hours: float,
    limited: bool = False,
    key_size: int = 2048,
    *,
    path_length: int | None = None,
    now: datetime | None = None,
) -> Proxy:
    """A new proxy issued by `proxy` (one more delegation step); see `create_proxy`."""
    return create_proxy(
        proxy.cert,
        proxy.key,
        proxy.chain,
        hours,
        limited,
        key_size,
        path_length=path_length,
        now=now,
        source=proxy.source,
    )


# --- files ----------------------------------------------------------------------

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CredentialError(
            f"cannot read the {what} {os.fspath(path)}: {exc.strerror or exc}; check the path"
        ) from exc


def load_proxy(
    source: str | os.PathLike[str] | bytes,
    *,
    now: datetime | None = None,
    check_validity: bool = True,
) -> Proxy:
    """Read a proxy from a PEM file (a path) or PEM bytes, and check it with `verify_chain`."""
    if isinstance(source, bytes):
        data, name = source, "the proxy data"
    else:
        data, name = _read(source, "proxy file"), os.fspath(source)
    certs: list[x509.Certificate] = []
    key = None
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1)
        try:
            if label == b"CERTIFICATE":
                certs.append(x509.load_pem_x509_certificate(match.group(0)))
            elif label.endswith(b"PRIVATE KEY") and key is None:
                key = serialization.load_pem_private_key(match.group(0), password=None)
        except TypeError as exc:
            raise CredentialError(
                f"the private key in {name} is encrypted; a proxy key must be plain, "
                "make the proxy again"
            ) from exc
        except ValueError as exc:
            raise CredentialError(
                f"{name} holds a damaged {label.decode().lower()} PEM block; make the proxy again"
            ) from exc
    if not certs or key is None:
        raise CredentialError(
            f"{name} is not a proxy file: it needs a certificate, its private key and the "
            "chain, in PEM; make one with `gwms proxy init`"
        )
    proxy = Proxy(cert=certs[0], key=key, chain=tuple(certs[1:]), source=name)  # type: ignore[arg-type]
    verify_chain(proxy, now, check_validity=check_validity)
    return proxy


def write_proxy(proxy: Proxy, path: str | os.PathLike[str]) -> Path:
    """Write the proxy file, created 0600, replacing any old file atomically."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        # Created with its final mode: the key is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise CredentialError(
            f"cannot write the proxy to {target}: {exc.strerror or exc}; "
            "check that its directory exists and is writable"
        ) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(proxy.to_pem())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True)
class Credential:
    """A user certificate, its key and any intermediate certificates found with it."""

    cert: x509.Certificate
    key: SigningKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()


def load_cert_and_key(
    cert_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    passphrase: bytes | str | None = None,
    *,
    now: datetime | None = None,
) -> Credential:
    """Read a user certificate (plus any chain after it) and its private key, and check them.

    Like grid-proxy-init, refuses a key file that others can read.
    """
    cert_name, key_name = os.fspath(cert_path), os.fspath(key_path)
    try:
        certs = x509.load_pem_x509_certificates(_read(cert_path, "certificate file"))
    except ValueError as exc:
        raise CredentialError(
            f"{cert_name} holds no PEM certificate; pass the user certificate (usercert.pem)"
        ) from exc
    key_data = _read(key_path, "key file")
    mode = os.stat(key_path).st_mode
    if mode & 0o077:
        raise CredentialError(
            f"the private key {key_name} is readable by others (mode {mode & 0o777:o}); "
            f"run `chmod 600 {key_name}`"
        )
    password = passphrase.encode() if isinstance(passphrase, str) else passphrase
    try:
        key = serialization.load_pem_private_key(key_data, password=password)
    except TypeError as exc:
        if password is None:
            raise CredentialError(
                f"the private key in {key_name} is encrypted; give its pass phrase"
            ) from exc
        raise CredentialError(
            f"the private key in {key_name} is not encrypted but a pass phrase was given; "
            "drop the pass phrase"
        ) from exc
    except ValueError as exc:
        reason = "wrong pass phrase or damaged key" if password else "not a PEM private key"
        raise CredentialError(
            f"cannot load the private key in {key_name} ({reason}); check the file and pass phrase"
        ) from exc
    if not _key_matches(certs[0], key):
        raise CredentialError(f"the private key in {key_name} does not belong to its certificate")
    chain = tuple(certs[1:])
    _check_issuer(certs[0], key, chain, cert_name, now)
    return Credential(cert=certs[0], key=key, chain=chain)  # type: ignore[arg-type]


# --- inspecting ---------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyInfo:
    """What `gwms proxy info` shows: the fields grid-proxy-info prints, plus the chain."""

    identity: str
    identity_rfc4514: str
    subject: str
    issuer: str
    type: str
    limited: bool
    strength: int
    not_before: datetime
    not_after: datetime
    time_left: timedelta
    path_length: int | None
    chain: tuple[str, ...]
    source: str

    @property
    def expired(self) -> bool:
        return self.time_left <= timedelta(0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; times as epoch seconds (UTC), as on the wire."""
        return {
            "identity": self.identity,
            "identity_rfc4514": self.identity_rfc4514,
            "subject": self.subject,
            "issuer": self.issuer,
            "type": self.type,
            "limited": self.limited,
            "strength": self.strength,
            "not_before": int(self.not_before.timestamp()),
            "not_after": int(self.not_after.timestamp()),
            "time_left_seconds": int(self.time_left.total_seconds()),
            "path_length": self.path_length,
            "chain": list(self.chain),
            "path": self.source,
        }


def _proxy_type(info: ProxyCertInfo) -> str:
    return {
        OID_PPL_INHERIT_ALL: TYPE_IMPERSONATION,
        OID_GLOBUS_LIMITED: TYPE_LIMITED,
        OID_PPL_INDEPENDENT: TYPE_INDEPENDENT,
    }.get(info.policy_language, TYPE_RESTRICTED)


def format_time_left(left: timedelta) -> str:
    """H:MM:SS, as grid-proxy-info prints time left (0:00:00 once expired)."""
    seconds = max(int(left.total_seconds()), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def inspect_proxy(proxy: Proxy, now: datetime | None = None) -> ProxyInfo:
    """Describe a proxy; the identity is its end-entity certificate's subject."""
    info = proxy_cert_info(proxy.cert)
    if info is None:
        raise CredentialError(
            f"the first certificate in {proxy.source} is not an RFC 3820 proxy; "
            "make one with `gwms proxy init`"
        )
    eec = next((c for c in proxy.chain if proxy_cert_info(c) is None), None)
    if eec is None:
        raise CredentialError(
            f"the chain in {proxy.source} lacks the user certificate; make the proxy again"
        )
    public_key = proxy.cert.public_key()
    strength = public_key.key_size if hasattr(public_key, "key_size") else 0
    not_after = proxy.cert.not_valid_after_utc
    return ProxyInfo(
        identity=one_line_name(eec.subject),
        identity_rfc4514=eec.subject.rfc4514_string(),
        subject=one_line_name(proxy.cert.subject),
        issuer=one_line_name(proxy.cert.issuer),
        type=_proxy_type(info),
        limited=info.policy_language == OID_GLOBUS_LIMITED,
        strength=strength,
        not_before=proxy.cert.not_valid_before_utc,
        not_after=not_after,
        time_left=max(not_after - _utc_now(now), timedelta(0)),
        path_length=info.path_length,
        chain=tuple(one_line_name(c.subject) for c in proxy.chain),
        source=proxy.source,
    )
