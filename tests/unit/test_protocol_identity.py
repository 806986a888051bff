"""The factory serves only frontends that prove who they are, and opens only their credentials."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import classad2
import pytest

from gwms.credentials.keys import FactoryKeyring
from gwms.credentials.model import AwsKeyPairCredential, IdTokenCredential
from gwms.credentials.sealed import seal
from gwms.protocol import (
    AuthorisedFrontend,
    CredentialAd,
    EntryAd,
    RequestAd,
    RequestRejected,
    SealedCredential,
    build_credential_ad,
    build_entry_ad,
    build_request_ad,
    make_credential_ad,
    make_request,
    open_credential_ad,
    parse_entry_ad,
    verify_request,
)
from gwms.protocol.identity import IdentityClaim, identity_context
from gwms.protocol.wire import AdKind

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
FACTORY = "gfactory-1"
VO1 = "vo1-frontend@vo1.example.org"
VO2 = "vo2-frontend@vo2.example.org"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AUTHORISED = {
    "vo1": AuthorisedFrontend(identity=VO1, entries=("ec2_*",)),
    "vo2": VO2,  # a plain identity: every entry
}


@pytest.fixture(scope="module", params=["x25519", "rsa"])
def ring(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> FactoryKeyring:
    path = Path(tmp_path_factory.mktemp("keys")) / "ring"
    return FactoryKeyring.generate(path, request.param, rsa_bits=2048)


@pytest.fixture(scope="module")
def other_ring(tmp_path_factory: pytest.TempPathFactory) -> FactoryKeyring:
    """The key ring of another factory."""
    return FactoryKeyring.generate(Path(tmp_path_factory.mktemp("other")) / "ring")


def entry_ad(ring: FactoryKeyring, entry: str = "ec2_us_east_1") -> EntryAd:
    """An entry as a frontend sees it: built by the factory, read back from the collector."""
    model = EntryAd(
        factory=FACTORY,
        entry=entry,
        trust_domain="grid",
        auth_methods=("aws_key_pair", "idtoken"),
        image_id="ami-0123456789abcdef0",
        instance_types=("m5.large",),
        key_id=ring.current_key_id,
        key_algorithm=ring.keys[0].algorithm,
        public_key_pem=ring.public_key_pem(),
    )
    parsed = parse_entry_ad(classad2.parseOne(build_entry_ad(model).printOld()))
    assert parsed is not None
    return parsed


def request_of(
    ring: FactoryKeyring,
    frontend: str = "vo1",
    identity: str = VO1,
    entry: str = "ec2_us_east_1",
    now: datetime = NOW,
) -> RequestAd:
    return make_request(
        entry_ad(ring, entry),
        frontend=frontend,
        group="main",
        identity=identity,
        idle=5,
        max_running=20,
        credential_ids=("aws",),
        now=now,
    )


def published(model: RequestAd | CredentialAd, authenticated: str | None) -> classad2.ClassAd:
    """What the factory reads: the ad as the collector stores it, stamped with the publisher."""
    ad = build_request_ad(model) if isinstance(model, RequestAd) else build_credential_ad(model)
    if authenticated is not None:
        ad["AuthenticatedIdentity"] = authenticated
    return classad2.parseOne(str(ad))


def rejected(ad: classad2.ClassAd, ring: FactoryKeyring, **kwargs: object) -> RequestRejected:
    args: dict[str, object] = {
        "keyring": ring,
        "factory_name": FACTORY,
        "authorised_frontends": AUTHORISED,
        "now": NOW,
    }
    args.update(kwargs)
    with pytest.raises(RequestRejected) as caught:
        verify_request(ad, **args)  # type: ignore[arg-type]
    return caught.value


def flip_one_character(envelope: str) -> str:
    """Change one base64url character in the middle of the body, keeping the encoding valid."""
    head, body = envelope.rsplit(":", 1)
    i = len(body) // 2
    return f"{head}:{body[:i]}{'A' if body[i] != 'A' else 'B'}{body[i + 1 :]}"


# -- requests -------------------------------------------------------------------------------------


def test_request_from_a_configured_frontend_is_accepted(ring: FactoryKeyring) -> None:
    verified = verify_request(
        published(request_of(ring), VO1), ring, FACTORY, AUTHORISED, NOW + timedelta(minutes=1)
    )
    assert verified.identity == VO1
    assert verified.frontend == "vo1"
    assert verified.entry == "ec2_us_east_1"
    assert (verified.request.idle, verified.request.max_running) == (5, 20)
    assert verified.request.credential_ids == ("aws",)


def test_request_without_authenticated_identity_is_rejected_as_unauthenticated(
    ring: FactoryKeyring,
) -> None:
    reason = rejected(published(request_of(ring), None), ring)
    assert reason.reason == "unauthenticated"
    assert "no AuthenticatedIdentity" in str(reason)


def test_request_without_sealed_identity_is_rejected(ring: FactoryKeyring) -> None:
    ad = published(request_of(ring), VO1)
    del ad["ReqEncIdentity"]
    del ad["ReqPubKeyID"]
    assert rejected(ad, ring).reason == "identity_missing"


def test_request_sealed_to_another_factory_key_cannot_be_opened(
    ring: FactoryKeyring, other_ring: FactoryKeyring
) -> None:
    ad = published(request_of(other_ring), VO1)
    error = rejected(ad, ring)
    assert error.reason == "identity_unreadable"
    assert "does not hold" in str(error)


def test_request_with_garbage_for_a_sealed_identity_cannot_be_opened(ring: FactoryKeyring) -> None:
    ad = published(request_of(ring), VO1)
    ad["ReqEncIdentity"] = "vo1-frontend@vo1.example.org"
    assert rejected(ad, ring).reason == "identity_unreadable"


def test_request_with_a_tampered_envelope_is_rejected(ring: FactoryKeyring) -> None:
    ad = published(request_of(ring), VO1)
    ad["ReqEncIdentity"] = flip_one_character(ad["ReqEncIdentity"])
    error = rejected(ad, ring)
    assert error.reason == "identity_tampered"
    assert "fails authentication" in str(error)


@pytest.mark.parametrize(
    ("attr", "value"),
    [("ReqIssuedAt", int(NOW.timestamp()) + 60), ("ReqCredentialIds", ["aws", "stolen"])],
)
def test_request_altered_after_sealing_is_rejected(
    ring: FactoryKeyring, attr: str, value: object
) -> None:
    ad = published(request_of(ring), VO1)
    ad[attr] = value
    error = rejected(ad, ring)
    assert error.reason == "identity_tampered"
    assert "altered after sealing" in str(error)


def test_sealed_identity_copied_into_another_request_ad_does_not_open(
    ring: FactoryKeyring,
) -> None:
    original = published(request_of(ring, entry="ec2_us_east_1"), VO1)
    other = published(request_of(ring, entry="ec2_eu_west_1"), VO1)
    other["ReqEncIdentity"] = original["ReqEncIdentity"]
    assert rejected(other, ring).reason == "identity_tampered"


def test_request_sealed_by_frontend_a_and_published_by_frontend_b_is_rejected_as_replayed(
    ring: FactoryKeyring,
) -> None:
    copied = published(request_of(ring, frontend="vo1", identity=VO1), VO2)
    error = rejected(copied, ring)
    assert error.reason == "replayed"
    assert f"published by {VO2} but sealed by {VO1}" in str(error)


def test_identity_not_configured_at_the_factory_is_rejected(ring: FactoryKeyring) -> None:
    intruder = "mallory@evil.example.org"
    as_vo1 = published(request_of(ring, frontend="vo1", identity=intruder), intruder)
    unknown = published(request_of(ring, frontend="vo9", identity=intruder), intruder)
    for ad in (as_vo1, unknown):
        error = rejected(ad, ring)
        assert error.reason == "unknown_identity"
        assert f"identity {intruder} is not configured at factory {FACTORY}" in str(error)


def test_stale_request_is_rejected_and_the_maximum_age_is_configurable(
    ring: FactoryKeyring,
) -> None:
    ad = published(request_of(ring, now=NOW - timedelta(minutes=20)), VO1)
    error = rejected(ad, ring)
    assert error.reason == "stale"
    assert "issued 20 min ago" in str(error)
    verified = verify_request(ad, ring, FACTORY, AUTHORISED, NOW, max_age=timedelta(minutes=30))
    assert verified.identity == VO1


def test_request_from_the_future_beyond_clock_skew_is_rejected(ring: FactoryKeyring) -> None:
    ad = published(request_of(ring, now=NOW + timedelta(minutes=10)), VO1)
    error = rejected(ad, ring)
    assert error.reason == "stale"
    assert "in the future" in str(error)


def test_request_for_an_entry_the_frontend_may_not_use_is_rejected(
    ring: FactoryKeyring,
) -> None:
    ad = published(request_of(ring, entry="os_cern"), VO1)
    error = rejected(ad, ring)
    assert error.reason == "entry_not_allowed"
    assert "may not use entry os_cern (allowed: ec2_*)" in str(error)
    vo2 = published(request_of(ring, frontend="vo2", identity=VO2, entry="os_cern"), VO2)
    assert verify_request(vo2, ring, FACTORY, AUTHORISED, NOW).entry == "os_cern"


def test_request_for_another_factory_is_rejected(ring: FactoryKeyring) -> None:
    error = rejected(published(request_of(ring), VO1), ring, factory_name="gfactory-2")
    assert error.reason == "wrong_factory"


def test_malformed_request_ad_is_rejected_naming_the_attribute(ring: FactoryKeyring) -> None:
    ad = published(request_of(ring), VO1)
    ad["ReqIdleGlideins"] = "lots"
    error = rejected(ad, ring)
    assert error.reason == "malformed"
    assert "attribute ReqIdleGlideins" in str(error)


def test_request_ad_of_a_newer_protocol_is_rejected_as_unsupported(ring: FactoryKeyring) -> None:
    ad = published(request_of(ring), VO1)
    ad["GwmsProtocolVersion"] = 99
    assert rejected(ad, ring).reason == "unsupported_version"


def test_sealed_claim_that_is_not_ours_is_unreadable(ring: FactoryKeyring) -> None:
    request = request_of(ring)
    context = identity_context(AdKind.REQUEST, FACTORY, request.name)
    envelope = seal(b'{"format": 7}', ring.public_key(), context=context)
    ad = published(request, VO1)
    ad["ReqEncIdentity"] = envelope
    error = rejected(ad, ring)
    assert error.reason == "identity_unreadable"
    assert "not a format 1 identity claim" in str(error)


def test_identity_claim_payload_has_the_documented_fields() -> None:
    claim = IdentityClaim(
        identity=VO1,
        frontend="vo1",
        group="main",
        request_name="ec2_us_east_1@gfactory-1",
        issued_at=NOW,
        credential_ids=("aws",),
    )
    doc = json.loads(claim.to_payload())
    assert doc == {
        "format": 1,
        "identity": VO1,
        "frontend": "vo1",
        "group": "main",
        "request_name": "ec2_us_east_1@gfactory-1",
        "issued_at": int(NOW.timestamp()),
        "credential_ids": ["aws"],
    }
    assert IdentityClaim.from_payload(claim.to_payload()) == claim


# -- credential ads -----------------------------------------------------------------------------


def _jwt(claims: dict[str, object]) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2lnbmF0dXJl"


TOKEN = _jwt({"sub": "vo1-pilot", "exp": int((NOW + timedelta(hours=8)).timestamp())})


def credentials() -> list[AwsKeyPairCredential | IdTokenCredential]:
    return [
        AwsKeyPairCredential(
            id="aws",
            trust_domain="grid",
            access_key_id="AKIAIOSFODNN7EXAMPLE",
            secret_access_key=AWS_SECRET,
        ),
        IdTokenCredential(id="pilot-token", trust_domain="grid", token=TOKEN),
    ]


def credential_ad_of(
    ring: FactoryKeyring, frontend: str = "vo1", identity: str = VO1
) -> CredentialAd:
    return make_credential_ad(
        factory=FACTORY,
        public_key_pem=ring.public_key_pem(),
        frontend=frontend,
        identity=identity,
        credentials=credentials(),
        now=NOW,
    )


def open_rejected(ad: classad2.ClassAd, ring: FactoryKeyring) -> RequestRejected:
    with pytest.raises(RequestRejected) as caught:
        open_credential_ad(ad, ring, FACTORY, AUTHORISED, NOW)
    return caught.value


def test_credential_ad_opens_to_the_frontends_credentials_by_id(ring: FactoryKeyring) -> None:
    ad = published(credential_ad_of(ring), VO1)
    assert AWS_SECRET not in str(ad)
    assert TOKEN not in str(ad)
    opened = open_credential_ad(ad, ring, FACTORY, AUTHORISED, NOW)
    assert (opened.frontend, opened.identity) == ("vo1", VO1)
    assert sorted(opened.credentials) == ["aws", "pilot-token"]
    aws = opened.credentials["aws"]
    token = opened.credentials["pilot-token"]
    assert isinstance(aws, AwsKeyPairCredential)
    assert isinstance(token, IdTokenCredential)
    assert aws.secret_access_key.get_secret_value() == AWS_SECRET
    assert token.token.get_secret_value() == TOKEN
    assert AWS_SECRET not in repr(opened)
    assert TOKEN not in repr(opened)


def test_credentials_copied_by_another_frontend_into_its_own_ad_do_not_open(
    ring: FactoryKeyring,
) -> None:
    stolen = credential_ad_of(ring, "vo1", VO1).credentials
    own = credential_ad_of(ring, "vo2", VO2)
    ad = published(own.model_copy(update={"credentials": stolen}), VO2)
    error = open_rejected(ad, ring)
    assert error.reason == "credential_tampered"
    assert "sealed by another frontend" in str(error)


def test_credential_ad_republished_by_another_frontend_is_rejected_as_replayed(
    ring: FactoryKeyring,
) -> None:
    error = open_rejected(published(credential_ad_of(ring, "vo1", VO1), VO2), ring)
    assert error.reason == "replayed"


def test_credential_envelopes_swapped_between_ids_do_not_open(ring: FactoryKeyring) -> None:
    cred_ad = credential_ad_of(ring)
    first, second = cred_ad.credentials
    swapped = (
        SealedCredential(id=first.id, envelope=second.envelope),
        SealedCredential(id=second.id, envelope=first.envelope),
    )
    ad = published(cred_ad.model_copy(update={"credentials": swapped}), VO1)
    assert open_rejected(ad, ring).reason == "credential_tampered"


def test_credential_ad_with_a_tampered_credential_envelope_is_rejected(
    ring: FactoryKeyring,
) -> None:
    cred_ad = credential_ad_of(ring)
    first, second = cred_ad.credentials
    broken = SealedCredential(id=first.id, envelope=flip_one_character(first.envelope))
    ad = published(cred_ad.model_copy(update={"credentials": (broken, second)}), VO1)
    assert open_rejected(ad, ring).reason == "credential_tampered"


def test_credential_ad_without_authenticated_identity_is_rejected(ring: FactoryKeyring) -> None:
    assert open_rejected(published(credential_ad_of(ring), None), ring).reason == (
        "unauthenticated"
    )


def test_credential_ad_from_an_unconfigured_identity_is_rejected(ring: FactoryKeyring) -> None:
    intruder = "mallory@evil.example.org"
    ad = published(credential_ad_of(ring, "vo1", intruder), intruder)
    assert open_rejected(ad, ring).reason == "unknown_identity"
