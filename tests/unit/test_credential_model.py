"""Credential model: typed per kind, secrets never shown, lifetimes explained, sealed round trip."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from gwms.credentials.model import (
    AwsKeyPairCredential,
    AwsRoleCredential,
    Credential,
    CredentialType,
    IdTokenCredential,
    OpenStackAppCredential,
    X509ProxyCredential,
    matches_trust_domain,
    open_credential,
    parse_credential,
    require_trust_domain,
    seal_credential,
)
from gwms.credentials.sealed import SealError
from gwms.errors import CredentialError

NOW = datetime.now(UTC).replace(microsecond=0)
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
OS_SECRET = "os-app-cred-secret-value-0123456789"
EXTERNAL_ID = "ext-id-shared-with-vo1"


def _cert(cn: str, not_after: datetime, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def _proxy_pem(*lifetimes: timedelta, with_key: bool = True) -> tuple[str, str]:
    """A PEM chain (certificate, optional key, further certificates); returns (pem, key pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    certs = [
        _cert(f"link{i}", NOW + lifetime, key).public_bytes(serialization.Encoding.PEM).decode()
        for i, lifetime in enumerate(lifetimes)
    ]
    return certs[0] + (key_pem if with_key else "") + "".join(certs[1:]), key_pem


def _jwt(claims: dict[str, Any]) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'kid': 'POOL'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def proxy_pem() -> tuple[str, str]:
    return _proxy_pem(timedelta(hours=12))


@pytest.fixture(scope="module")
def factory_key() -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.generate()


@pytest.fixture
def every_credential(proxy_pem: tuple[str, str]) -> list[Credential]:
    return [
        X509ProxyCredential(id="vo1_pilot", trust_domain="grid", pem=proxy_pem[0]),
        AwsKeyPairCredential(
            id="vo1_aws",
            trust_domain="cloud",
            access_key_id="AKIAIOSFODNN7EXAMPLE",
            secret_access_key=AWS_SECRET,
        ),
        AwsRoleCredential(
            id="vo1_role",
            trust_domain="cloud",
            role_arn="arn:aws:iam::123456789012:role/gwms-pilots",
            external_id=EXTERNAL_ID,
            session_duration_seconds=7200,
        ),
        OpenStackAppCredential(
            id="vo1_os",
            trust_domain="cloud",
            auth_url="https://keystone.example.org:5000/v3",
            app_credential_id="a1b2c3",
            app_credential_secret=OS_SECRET,
            region="RegionOne",
        ),
        IdTokenCredential(
            id="vo1_token",
            trust_domain="grid",
            token=_jwt({"sub": "vo1@pool", "exp": int((NOW + timedelta(hours=3)).timestamp())}),
        ),
    ]


def _secrets(cred: Credential, proxy_pem: tuple[str, str]) -> list[str]:
    if isinstance(cred, X509ProxyCredential):
        return [proxy_pem[0], "".join(proxy_pem[1].splitlines()[1:-1])[:40]]
    if isinstance(cred, IdTokenCredential):
        token = cred.token.get_secret_value()
        return [token, token.split(".")[1]]
    return {
        AwsKeyPairCredential: [AWS_SECRET],
        AwsRoleCredential: [EXTERNAL_ID],
        OpenStackAppCredential: [OS_SECRET],
    }[type(cred)]


def test_every_credential_type_has_a_model_with_its_type_tag(
    every_credential: list[Credential],
) -> None:
    assert [c.type for c in every_credential] == list(CredentialType)  # type: ignore[attr-defined]


def test_repr_str_and_json_dump_never_contain_a_secret(
    every_credential: list[Credential], proxy_pem: tuple[str, str]
) -> None:
    for cred in every_credential:
        shown = repr(cred) + str(cred) + cred.model_dump_json() + f"{cred!r} {cred}"
        for secret in _secrets(cred, proxy_pem):
            assert secret not in shown, type(cred).__name__
        assert cred.id in shown


def test_validation_errors_never_contain_the_secret() -> None:
    token = "only-two.parts-super-secret-token"
    with pytest.raises(ValidationError) as info:
        IdTokenCredential(id="t", trust_domain="grid", token=token)
    assert "super-secret" not in str(info.value)
    with pytest.raises(CredentialError) as parsed:
        parse_credential({"type": "idtoken", "id": "t", "trust_domain": "grid", "token": token})
    assert "super-secret" not in str(parsed.value)
    assert "field token" in str(parsed.value)
    assert "is not a JWT" in str(parsed.value)


def test_sealed_round_trip_gives_back_an_equal_credential_of_the_same_type(
    every_credential: list[Credential], factory_key: x25519.X25519PrivateKey
) -> None:
    context = b"factory=gfactory-local;ad=glideclientglobal"
    for cred in every_credential:
        envelope = seal_credential(cred, factory_key.public_key(), context)
        opened = open_credential(envelope, factory_key, context)
        assert type(opened) is type(cred)
        assert opened == cred
        assert opened.to_sealed_payload() == cred.to_sealed_payload()


def test_sealed_credential_does_not_open_in_another_context(
    every_credential: list[Credential], factory_key: x25519.X25519PrivateKey
) -> None:
    envelope = seal_credential(every_credential[1], factory_key.public_key(), b"factory=A")
    with pytest.raises(SealError):
        open_credential(envelope, factory_key, b"factory=B")


def test_sealed_payload_reveals_secrets_and_nothing_else_does(
    every_credential: list[Credential],
) -> None:
    aws = every_credential[1]
    payload = json.loads(aws.to_sealed_payload())
    assert payload == {
        "format": 1,
        "credential": {
            "type": "aws_key_pair",
            "id": "vo1_aws",
            "trust_domain": "cloud",
            "access_key_id": "AKIAIOSFODNN7EXAMPLE",
            "secret_access_key": AWS_SECRET,
        },
    }


@pytest.mark.parametrize(
    ("payload", "phrase"),
    [
        (b"\xff\xfe", "not JSON"),
        (b'{"format": 9, "credential": {}}', "format 9"),
        (
            b'{"format": 1, "credential": {"type": "kerberos", "id": "k", "trust_domain": "g"}}',
            "field (top level)",
        ),
        (
            b'{"format": 1, "credential": {"type": "aws_role", "id": "r", "trust_domain": "g", '
            b'"role_arn": "arn:aws:iam::1:role/x"}}',
            "field role_arn",
        ),
        (
            b'{"format": 1, "credential": {"type": "aws_key_pair", "id": "a", "trust_domain": "g", '
            b'"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "s", "extra": 1}}',
            "field ",
        ),
    ],
)
def test_bad_sealed_payloads_are_refused_with_the_field_named(payload: bytes, phrase: str) -> None:
    with pytest.raises(CredentialError) as info:
        Credential.from_sealed_payload(payload)
    assert phrase in str(info.value)


@pytest.mark.parametrize(
    ("model", "fields", "bad_field"),
    [
        (X509ProxyCredential, {"pem": "not a certificate"}, "pem"),
        (
            X509ProxyCredential,
            {"pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "pem",
        ),
        (
            AwsKeyPairCredential,
            {"access_key_id": "akia-lower", "secret_access_key": AWS_SECRET},
            "access_key_id",
        ),
        (AwsRoleCredential, {"role_arn": "arn:aws:iam::123456789012:user/bob"}, "role_arn"),
        (
            AwsRoleCredential,
            {"role_arn": "arn:aws:iam::123456789012:role/r", "session_duration_seconds": 60},
            "session_duration_seconds",
        ),
        (
            OpenStackAppCredential,
            {"auth_url": "keystone:5000", "app_credential_id": "a", "app_credential_secret": "s"},
            "auth_url",
        ),
        (IdTokenCredential, {"token": _jwt({"exp": "tomorrow"})}, "token"),
    ],
)
def test_invalid_fields_are_rejected(
    model: type[Credential], fields: dict[str, Any], bad_field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        model(id="c1", trust_domain="grid", **fields)
    assert [e["loc"][0] for e in info.value.errors()] == [bad_field]


def test_ids_and_trust_domains_must_be_plain_names(proxy_pem: tuple[str, str]) -> None:
    for bad in ({"id": "../etc"}, {"id": ""}, {"trust_domain": ""}, {"trust_domain": "a b"}):
        fields = {"id": "ok", "trust_domain": "grid", "pem": proxy_pem[0], **bad}
        with pytest.raises(ValidationError):
            X509ProxyCredential(**fields)


def test_models_are_immutable(every_credential: list[Credential]) -> None:
    with pytest.raises(ValidationError):
        every_credential[0].trust_domain = "other"  # type: ignore[misc]


# -- lifetimes ---------------------------------------------------------------------------------


def test_short_lived_proxy_is_unusable_with_a_reason_naming_it_and_both_times() -> None:
    pem, _ = _proxy_pem(timedelta(minutes=3, seconds=30))
    proxy = X509ProxyCredential(id="vo1_pilot", trust_domain="grid", pem=pem)
    ok, reason = proxy.usable(timedelta(hours=2), now=NOW)
    assert not ok
    assert reason == "proxy vo1_pilot expires in 3 min < 2 h minimum"


def test_proxy_expiry_is_the_earliest_not_after_in_the_chain() -> None:
    pem, _ = _proxy_pem(timedelta(hours=12), timedelta(hours=1), timedelta(days=30))
    proxy = X509ProxyCredential(id="chain", trust_domain="grid", pem=pem)
    assert proxy.expires_at() == NOW + timedelta(hours=1)
    assert proxy.time_left(NOW) == timedelta(hours=1)
    assert proxy.usable(timedelta(minutes=30), now=NOW) == (
        True,
        "proxy chain expires in 1 h >= 30 min minimum",
    )


def test_expired_proxy_says_how_long_ago() -> None:
    pem, _ = _proxy_pem(timedelta(hours=5), with_key=False)
    proxy = X509ProxyCredential(id="old", trust_domain="grid", pem=pem)
    assert proxy.usable(timedelta(hours=1), now=NOW + timedelta(hours=8)) == (
        False,
        "proxy old expired 3 h ago",
    )


def test_idtoken_expiry_comes_from_its_exp_claim() -> None:
    exp = int((NOW + timedelta(minutes=10)).timestamp())
    token = IdTokenCredential(id="tok", trust_domain="grid", token=_jwt({"sub": "u", "exp": exp}))
    assert token.exp == exp
    assert token.expires_at() == datetime.fromtimestamp(exp, UTC)
    assert token.usable(timedelta(hours=1), now=NOW) == (
        False,
        "idtoken tok expires in 10 min < 1 h minimum",
    )
    assert token.usable(timedelta(minutes=5), now=NOW)[0]


def test_idtoken_without_exp_never_expires() -> None:
    token = IdTokenCredential(id="forever", trust_domain="grid", token=_jwt({"sub": "u"}))
    assert token.expires_at() is None
    assert token.time_left(NOW) is None
    assert token.usable(timedelta(days=7), now=NOW) == (True, "idtoken forever does not expire")


def test_cloud_keys_have_no_expiry_of_their_own(every_credential: list[Credential]) -> None:
    for cred in every_credential[1:4]:
        assert cred.expires_at() is None
        assert cred.usable(timedelta(hours=2), now=NOW)[0]


# -- trust domains ---------------------------------------------------------------------------


def test_credential_matches_only_its_own_trust_domain(every_credential: list[Credential]) -> None:
    proxy = every_credential[0]
    assert matches_trust_domain(proxy, "grid")
    assert not matches_trust_domain(proxy, "Grid")
    assert not matches_trust_domain(proxy, "cloud")
    require_trust_domain(proxy, "grid", "ec2_us_east_1")
    with pytest.raises(CredentialError) as info:
        require_trust_domain(proxy, "cloud", "ec2_us_east_1")
    assert "proxy vo1_pilot is for trust domain 'grid'" in str(info.value)
    assert "ec2_us_east_1" in str(info.value)


def test_reasons_round_time_left_down_so_they_never_overstate_it() -> None:
    pem, _ = _proxy_pem(timedelta(hours=1, minutes=59, seconds=59))
    proxy = X509ProxyCredential(id="p", trust_domain="grid", pem=pem)
    assert proxy.usable(timedelta(hours=2), now=NOW) == (
        False,
        "proxy p expires in 1 h 59 min < 2 h minimum",
    )
