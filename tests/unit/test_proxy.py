"""RFC 3820 proxies: creation, lifetimes, limited propagation, files, inspection, each error."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gwms.credentials import proxy as px
from gwms.credentials.testca import make_ca, make_user_cert, write_test_pki
from gwms.errors import CredentialError

BITS = 1024  # proxy key size where the size does not matter: keeps the suite fast
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Pki:
    ca: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    user: x509.Certificate
    user_key: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca, ca_key = make_ca("unit test CA", days=30)
    user, user_key = make_user_cert(ca, ca_key, "Alice Example", hours=48, not_before=NOW)
    return Pki(ca, ca_key, user, user_key)


@pytest.fixture(scope="module")
def full(pki: Pki) -> px.Proxy:
    return px.create_proxy(pki.user, pki.user_key, (), 12, key_size=BITS, now=NOW)


@pytest.fixture(scope="module")
def limited(full: px.Proxy) -> px.Proxy:
    return px.derive_proxy(full, 6, limited=True, key_size=BITS, now=NOW)


def sign_proxy_cert(
    issuer: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    language: x509.ObjectIdentifier = px.OID_PPL_INHERIT_ALL,
    subject: x509.Name | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A hand-made proxy certificate, to build chains create_proxy refuses to make."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=BITS)
    name = subject or x509.Name(
        [
            *issuer.subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "77")]),
        ]
    )
    der = px.encode_proxy_cert_info(px.ProxyCertInfo(language))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(77)
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(hours=1))
        .add_extension(x509.UnrecognizedExtension(px.OID_PROXY_CERT_INFO, der), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


# --- the proxyCertInfo encoding ---------------------------------------------------


def test_proxy_cert_info_for_inherit_all_is_the_rfc_3820_der() -> None:
    # SEQUENCE { SEQUENCE { OID 1.3.6.1.5.5.7.21.1 } }, worked out by hand from RFC 3820.
    expected = bytes.fromhex("300c300a06082b06010505071501")
    assert px.encode_proxy_cert_info(px.ProxyCertInfo(px.OID_PPL_INHERIT_ALL)) == expected


@pytest.mark.parametrize("path_length", [None, 0, 1, 127, 128, 255, 256, 2**40])
def test_proxy_cert_info_round_trips_path_lengths(path_length: int | None) -> None:
    info = px.ProxyCertInfo(px.OID_GLOBUS_LIMITED, path_length, b"policy bytes")
    assert px.decode_proxy_cert_info(px.encode_proxy_cert_info(info)) == info


def test_proxy_cert_info_with_a_long_policy_uses_long_form_lengths() -> None:
    info = px.ProxyCertInfo(px.OID_PPL_INHERIT_ALL, 3, b"x" * 1000)
    der = px.encode_proxy_cert_info(info)
    assert der[1] == 0x82  # two length bytes follow
    assert px.decode_proxy_cert_info(der) == info


@pytest.mark.parametrize(
    "der",
    [
        b"",
        bytes.fromhex("300c300a06082b060105050715"),  # truncated
        bytes.fromhex("3003020101"),  # path length without a policy
        bytes.fromhex("30050201803000"),  # negative path length, empty policy
        bytes.fromhex("300c300a06082b06010505071501ff"),  # trailing garbage
    ],
)
def test_malformed_proxy_cert_info_is_rejected(der: bytes) -> None:
    with pytest.raises(ValueError):
        px.decode_proxy_cert_info(der)


# --- what a new proxy looks like ------------------------------------------------------


def test_proxy_subject_is_issuer_subject_plus_cn_of_its_serial(pki: Pki, full: px.Proxy) -> None:
    cert = full.cert
    assert cert.serial_number > 0
    assert cert.issuer == pki.user.subject
    assert x509.Name(cert.subject.rdns[:-1]) == pki.user.subject
    (last,) = cert.subject.rdns[-1]
    assert last.oid == NameOID.COMMON_NAME
    assert last.value == str(cert.serial_number)
    cert.verify_directly_issued_by(pki.user)


def test_proxy_carries_critical_proxy_cert_info_and_key_usage_and_no_ca_flag(
    full: px.Proxy,
) -> None:
    ext = full.cert.extensions.get_extension_for_oid(px.OID_PROXY_CERT_INFO)
    assert ext.critical
    assert px.proxy_cert_info(full.cert) == px.ProxyCertInfo(px.OID_PPL_INHERIT_ALL)
    usage = full.cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    with pytest.raises(x509.ExtensionNotFound):
        full.cert.extensions.get_extension_for_class(x509.BasicConstraints)


def test_path_length_constraint_is_written_when_asked(pki: Pki) -> None:
    proxy = px.create_proxy(pki.user, pki.user_key, (), 1, key_size=BITS, path_length=2, now=NOW)
    info = px.proxy_cert_info(proxy.cert)
    assert info is not None
    assert info.path_length == 2


def test_proxy_key_has_the_requested_size(pki: Pki) -> None:
    proxy = px.create_proxy(pki.user, pki.user_key, (), 1, key_size=2048, now=NOW)
    assert px.inspect_proxy(proxy, now=NOW).strength == 2048


def test_proxy_serials_are_random(pki: Pki) -> None:
    serials = {
        px.create_proxy(pki.user, pki.user_key, (), 1, key_size=BITS, now=NOW).cert.serial_number
        for _ in range(3)
    }
    assert len(serials) == 3


# --- lifetimes and clamping --------------------------------------------------------------


def test_lifetime_is_the_requested_hours_from_now(full: px.Proxy) -> None:
    assert full.cert.not_valid_after_utc == NOW + timedelta(hours=12)
    assert not full.clamped


def test_proxy_starts_a_little_early_for_clock_skew_but_not_before_its_issuer(
    pki: Pki, full: px.Proxy
) -> None:
    # The user certificate starts exactly at NOW, so the skew allowance is cut to it.
    assert full.cert.not_valid_before_utc == pki.user.not_valid_before_utc
    later = NOW + timedelta(hours=1)
    proxy = px.create_proxy(pki.user, pki.user_key, (), 1, key_size=BITS, now=later)
    assert proxy.cert.not_valid_before_utc == later - px.CLOCK_SKEW


def test_lifetime_is_clamped_to_the_user_certificate_and_reported(pki: Pki) -> None:
    proxy = px.create_proxy(pki.user, pki.user_key, (), 500, key_size=BITS, now=NOW)
    assert proxy.clamped
    assert proxy.cert.not_valid_after_utc == pki.user.not_valid_after_utc


def test_derived_proxy_is_clamped_to_its_parent_proxy(full: px.Proxy) -> None:
    child = px.derive_proxy(full, 24, key_size=BITS, now=NOW + timedelta(hours=2))
    assert child.clamped
    assert child.cert.not_valid_after_utc == full.cert.not_valid_after_utc
    assert child.chain == (full.cert, *full.chain)


def test_fractional_hours_are_honoured(full: px.Proxy) -> None:
    child = px.derive_proxy(full, 0.5, key_size=BITS, now=NOW)
    assert child.cert.not_valid_after_utc == NOW + timedelta(minutes=30)
    assert not child.clamped


@pytest.mark.parametrize("hours", [0, -1.0])
def test_non_positive_lifetime_is_refused(pki: Pki, hours: float) -> None:
    with pytest.raises(CredentialError, match="lifetime must be positive"):
        px.create_proxy(pki.user, pki.user_key, (), hours, key_size=BITS, now=NOW)


# --- limited proxies and delegation depth ---------------------------------------------------


def test_limited_proxy_uses_the_globus_limited_policy(limited: px.Proxy) -> None:
    info = px.proxy_cert_info(limited.cert)
    assert info is not None
    assert info.policy_language == px.OID_GLOBUS_LIMITED
    assert limited.limited


def test_a_limited_proxy_only_derives_limited_proxies(limited: px.Proxy) -> None:
    child = px.derive_proxy(limited, 1, limited=False, key_size=BITS, now=NOW)
    assert child.limited
    assert px.inspect_proxy(child, now=NOW).type == px.TYPE_LIMITED


def test_a_full_proxy_can_derive_a_full_proxy(full: px.Proxy) -> None:
    child = px.derive_proxy(full, 1, key_size=BITS, now=NOW)
    assert not child.limited


def test_full_proxy_signed_by_a_limited_proxy_is_rejected(limited: px.Proxy) -> None:
    cert, key = sign_proxy_cert(limited.cert, limited.key)
    bad = px.Proxy(cert, key, (limited.cert, *limited.chain), source="bad.pem")
    with pytest.raises(CredentialError, match=r"in bad\.pem is a full proxy issued by a limited"):
        px.verify_chain(bad, now=NOW)


def test_path_length_zero_forbids_further_delegation(pki: Pki) -> None:
    last = px.create_proxy(pki.user, pki.user_key, (), 1, key_size=BITS, path_length=0, now=NOW)
    last = replace(last, source="x509up")
    with pytest.raises(CredentialError, match=r"x509up forbids further delegation"):
        px.derive_proxy(last, 1, key_size=BITS, now=NOW)


def test_derive_below_a_path_length_one_proxy_stops_at_the_second_step(pki: Pki) -> None:
    top = px.create_proxy(pki.user, pki.user_key, (), 1, key_size=BITS, path_length=1, now=NOW)
    middle = px.derive_proxy(top, 1, key_size=BITS, now=NOW)
    with pytest.raises(CredentialError, match=r"forbids further delegation \(path length 1 on "):
        px.derive_proxy(middle, 1, key_size=BITS, now=NOW)


def test_chain_deeper_than_a_path_length_allows_is_rejected(pki: Pki) -> None:
    top = px.create_proxy(pki.user, pki.user_key, (), 1, key_size=BITS, path_length=1, now=NOW)
    middle = px.derive_proxy(top, 1, key_size=BITS, now=NOW)
    cert, key = sign_proxy_cert(middle.cert, middle.key)  # create_proxy would refuse
    bottom = px.Proxy(cert, key, middle.certificates)
    with pytest.raises(CredentialError, match="allows 1 further proxies below it but has 2"):
        px.verify_chain(replace(bottom, source="deep.pem"), now=NOW)


# --- files ---------------------------------------------------------------------------


def test_proxy_file_lists_proxy_then_key_then_chain(full: px.Proxy) -> None:
    labels = [
        line.split(b"BEGIN ")[1].rstrip(b"-")
        for line in full.to_pem().splitlines()
        if line.startswith(b"-----BEGIN")
    ]
    assert labels == [b"CERTIFICATE", b"RSA PRIVATE KEY", b"CERTIFICATE"]


def test_written_proxy_loads_back_identical(tmp_path: Path, limited: px.Proxy) -> None:
    path = px.write_proxy(limited, tmp_path / "x509up")
    loaded = px.load_proxy(path, now=NOW)
    assert loaded.cert == limited.cert
    assert loaded.chain == limited.chain
    assert loaded.to_pem() == limited.to_pem()
    assert loaded.source == str(path)
    assert px.load_proxy(limited.to_pem(), now=NOW).cert == limited.cert


def test_proxy_file_is_created_0600_whatever_the_umask(tmp_path: Path, full: px.Proxy) -> None:
    old = os.umask(0)
    try:
        path = px.write_proxy(full, tmp_path / "proxy.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_overwriting_a_world_readable_file_leaves_a_0600_proxy(
    tmp_path: Path, full: px.Proxy
) -> None:
    target = tmp_path / "proxy.pem"
    target.write_bytes(b"old")
    target.chmod(0o644)
    px.write_proxy(full, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == full.to_pem()
    assert [p.name for p in tmp_path.iterdir()] == ["proxy.pem"]  # no temporary left behind


def test_writing_into_a_missing_directory_says_so(tmp_path: Path, full: px.Proxy) -> None:
    with pytest.raises(CredentialError, match=r"cannot write the proxy to .*nodir/p\.pem"):
        px.write_proxy(full, tmp_path / "nodir" / "p.pem")


def test_test_pki_keys_are_0600_and_certificates_chain(tmp_path: Path) -> None:
    pki = write_test_pki(tmp_path / "pki")
    assert stat.S_IMODE(pki.user_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.ca_key.stat().st_mode) == 0o600
    cred = px.load_cert_and_key(pki.user_cert, pki.user_key)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cred.cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_encrypted_user_key_needs_its_pass_phrase(tmp_path: Path, pki: Pki) -> None:
    cert_path, key_path = tmp_path / "usercert.pem", tmp_path / "userkey.pem"
    cert_path.write_bytes(pki.user.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        pki.user_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    key_path.chmod(0o600)
    with pytest.raises(CredentialError, match=r"userkey\.pem is encrypted; give its pass phrase"):
        px.load_cert_and_key(cert_path, key_path, now=NOW)
    with pytest.raises(CredentialError, match="wrong pass phrase"):
        px.load_cert_and_key(cert_path, key_path, "wrong", now=NOW)
    assert px.load_cert_and_key(cert_path, key_path, "s3cret", now=NOW).cert == pki.user


def test_user_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    pki = write_test_pki(tmp_path)
    pki.user_key.chmod(0o644)
    with pytest.raises(CredentialError, match=r"readable by others \(mode 644\); run `chmod 600"):
        px.load_cert_and_key(pki.user_cert, pki.user_key)


def test_a_file_without_a_key_is_not_a_proxy_file(tmp_path: Path, full: px.Proxy) -> None:
    path = tmp_path / "certs.pem"
    path.write_bytes(full.cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CredentialError, match=r"certs\.pem is not a proxy file"):
        px.load_proxy(path, now=NOW)


def test_a_user_certificate_and_key_are_not_a_proxy(pki: Pki) -> None:
    data = pki.user.public_bytes(serialization.Encoding.PEM) + pki.user_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with pytest.raises(CredentialError, match="is not an RFC 3820 proxy"):
        px.load_proxy(data, now=NOW)


def test_a_proxy_without_its_user_certificate_is_rejected(full: px.Proxy) -> None:
    with pytest.raises(CredentialError, match="lacks the user certificate"):
        px.verify_chain(replace(full, chain=()), now=NOW)


def test_missing_proxy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match=r"cannot read the proxy file .*x509up_missing"):
        px.load_proxy(tmp_path / "x509up_missing")


# --- inspection -----------------------------------------------------------------------


def test_inspect_reports_identity_type_strength_and_time_left(
    pki: Pki, limited: px.Proxy, full: px.Proxy
) -> None:
    info = px.inspect_proxy(limited, now=NOW + timedelta(hours=1))
    assert info.identity == "/DC=org/DC=gwms-cloud-test/OU=People/CN=Alice Example"
    assert info.identity_rfc4514 == "CN=Alice Example,OU=People,DC=gwms-cloud-test,DC=org"
    assert info.subject == px.one_line_name(limited.cert.subject)
    assert info.subject.startswith(info.issuer + "/CN=")
    assert info.issuer == px.one_line_name(full.cert.subject)
    assert info.type == "RFC 3820 compliant limited proxy"
    assert info.limited
    assert info.strength == BITS
    assert info.not_after == NOW + timedelta(hours=6)
    assert info.time_left == timedelta(hours=5)
    assert info.path_length is None
    assert info.chain == (px.one_line_name(full.cert.subject), info.identity)
    assert px.inspect_proxy(full, now=NOW).type == "RFC 3820 compliant impersonation proxy"


def test_time_left_of_an_expired_proxy_is_zero(full: px.Proxy) -> None:
    info = px.inspect_proxy(full, now=NOW + timedelta(days=3))
    assert info.time_left == timedelta(0)
    assert info.expired
    assert px.format_time_left(info.time_left) == "0:00:00"


def test_time_left_prints_like_grid_proxy_info() -> None:
    assert px.format_time_left(timedelta(hours=11, minutes=59, seconds=5)) == "11:59:05"
    assert px.format_time_left(timedelta(hours=150)) == "150:00:00"


def test_info_dict_carries_epoch_seconds(full: px.Proxy) -> None:
    data = px.inspect_proxy(full, now=NOW).to_dict()
    assert data["not_after"] == int((NOW + timedelta(hours=12)).timestamp())
    assert data["time_left_seconds"] == 12 * 3600
    assert data["type"] == px.TYPE_IMPERSONATION


def test_repr_of_a_proxy_does_not_show_the_key(full: px.Proxy) -> None:
    assert "PRIVATE" not in repr(full)
    assert "RSAPrivateKey" not in repr(full)


# --- errors the checks catch ---------------------------------------------------------


def test_expired_proxy_is_rejected_with_its_end_time(full: px.Proxy) -> None:
    end = full.cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    with pytest.raises(CredentialError) as caught:
        px.load_proxy(full.to_pem(), now=NOW + timedelta(hours=13))
    assert str(caught.value) == (
        f"the proxy {px.one_line_name(full.cert.subject)} in the proxy data expired at {end}; "
        "make a new proxy"
    )


def test_proxy_from_an_expired_user_certificate_is_refused(pki: Pki) -> None:
    user, key = make_user_cert(
        pki.ca, pki.ca_key, "Old", hours=1, not_before=NOW - timedelta(hours=3)
    )
    with pytest.raises(
        CredentialError,
        match=r"the user certificate .*CN=Old in usercert\.pem expired at .*; renew the cert",
    ):
        px.create_proxy(user, key, (), 1, key_size=BITS, now=NOW, source="usercert.pem")


def test_not_yet_valid_user_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    start = NOW + timedelta(days=1)
    user, key = make_user_cert(pki.ca, pki.ca_key, "Future", hours=5, not_before=start)
    cert_path, key_path = tmp_path / "usercert.pem", tmp_path / "userkey.pem"
    cert_path.write_bytes(user.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
    os.close(fd)
    when = start.strftime("%Y-%m-%d %H:%M:%S UTC")
    with pytest.raises(CredentialError, match=rf"is not valid yet: it starts at {when}"):
        px.load_cert_and_key(cert_path, key_path, now=NOW)


def test_not_yet_valid_proxy_is_rejected(full: px.Proxy) -> None:
    with pytest.raises(CredentialError, match=r"the proxy .* is not valid yet"):
        px.verify_chain(full, now=NOW - timedelta(hours=1))


def test_broken_chain_names_the_link(pki: Pki, full: px.Proxy) -> None:
    other, _ = make_user_cert(pki.ca, pki.ca_key, "Bob Other", hours=5, not_before=NOW)
    bad = replace(full, chain=(other,), source="x509up_u1000")
    with pytest.raises(CredentialError) as caught:
        px.verify_chain(bad, now=NOW)
    message = str(caught.value)
    assert message.startswith("broken chain in x509up_u1000: certificate 1 (")
    assert "CN=Alice Example/CN=" in message
    assert (
        "was not issued by certificate 2 (/DC=org/DC=gwms-cloud-test/OU=People/CN=Bob Other)"
        in message
    )


def test_chain_in_the_wrong_order_is_broken(limited: px.Proxy) -> None:
    shuffled = replace(limited, chain=tuple(reversed(limited.chain)))
    with pytest.raises(CredentialError, match=r"broken chain in .*: certificate 1 "):
        px.verify_chain(shuffled, now=NOW)


def test_forged_signature_with_the_right_names_is_a_broken_chain(pki: Pki) -> None:
    impostor_key = rsa.generate_private_key(public_exponent=65537, key_size=BITS)
    forged = px.create_proxy(pki.user, pki.user_key, (), 1, key_size=BITS, now=NOW)
    resigned, key = sign_proxy_cert(pki.user, impostor_key, subject=forged.cert.subject)
    with pytest.raises(CredentialError, match="broken chain"):
        px.verify_chain(px.Proxy(resigned, key, (pki.user,)), now=NOW)


def test_proxy_whose_subject_breaks_the_naming_rule_is_rejected(pki: Pki) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not derived from the issuer")])
    cert, key = sign_proxy_cert(pki.user, pki.user_key, subject=name)
    with pytest.raises(CredentialError, match="breaks the RFC 3820 naming rule"):
        px.verify_chain(px.Proxy(cert, key, (pki.user,), source="odd.pem"), now=NOW)


def test_proxy_key_that_does_not_match_is_named(full: px.Proxy, limited: px.Proxy) -> None:
    mixed = replace(full, key=limited.key, source="/tmp/x509up_u1000")
    with pytest.raises(CredentialError) as caught:
        px.verify_chain(mixed, now=NOW)
    assert str(caught.value) == (
        "the private key in /tmp/x509up_u1000 does not belong to its certificate"
    )


def test_user_key_that_does_not_match_is_named(tmp_path: Path) -> None:
    mine = write_test_pki(tmp_path / "a")
    theirs = write_test_pki(tmp_path / "b")
    with pytest.raises(CredentialError) as caught:
        px.load_cert_and_key(mine.user_cert, theirs.user_key)
    assert str(caught.value) == (
        f"the private key in {theirs.user_key} does not belong to its certificate"
    )


def test_create_checks_the_issuer_key_too(pki: Pki, full: px.Proxy) -> None:
    with pytest.raises(CredentialError, match=r"in userkey\.pem does not belong"):
        px.create_proxy(pki.user, full.key, (), 1, key_size=BITS, now=NOW, source="userkey.pem")
