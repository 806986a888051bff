"""Protocol ads survive HTCondor's wire syntaxes, are typed for matching, and are versioned."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import classad2
import pytest
from pydantic import ValidationError

from gwms.credentials.keys import FactoryKeyring
from gwms.credentials.model import AwsKeyPairCredential
from gwms.protocol import (
    AdKind,
    EntryAd,
    EntryLifetimes,
    EntryLimits,
    FactoryClientAd,
    ProtocolError,
    RemoveExcess,
    ResourceAd,
    build_credential_ad,
    build_entry_ad,
    build_factory_client_ad,
    build_request_ad,
    build_resource_ad,
    make_credential_ad,
    make_request,
    parse_credential_ad,
    parse_entry_ad,
    parse_factory_client_ad,
    parse_request_ad,
    parse_resource_ad,
)

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

Wire = Callable[[classad2.ClassAd], classad2.ClassAd]


def new_syntax(ad: classad2.ClassAd) -> classad2.ClassAd:
    return classad2.parseOne(str(ad), classad2.ParserType.New)


def old_syntax(ad: classad2.ClassAd) -> classad2.ClassAd:
    """HTCondor's daemons exchange ads in the old syntax: one `Attr = value` per line."""
    return classad2.parseOne(ad.printOld(), classad2.ParserType.Old)


WIRES = pytest.mark.parametrize("wire", [new_syntax, old_syntax], ids=["new", "old"])


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> FactoryKeyring:
    return FactoryKeyring.generate(Path(tmp_path_factory.mktemp("keys")) / "ring")


def make_entry(ring: FactoryKeyring, **changes: object) -> EntryAd:
    fields: dict[str, object] = {
        "factory": "gfactory-1",
        "entry": "ec2_us_east_1",
        "trust_domain": "grid",
        "auth_methods": ("idtoken", "x509_proxy"),
        "image_id": "ami-0123456789abcdef0",
        "instance_types": ("m5.large", "m5.xlarge"),
        "limits": EntryLimits(
            max_running=200, max_idle=20, max_per_frontend=50, max_launches_per_cycle=10
        ),
        "lifetimes": EntryLifetimes(
            max_seconds=43200, retire_seconds=36000, idle_shutdown_seconds=600
        ),
        "attributes": {
            "GLIDEIN_Site": "AWS_US_EAST_1",
            "GLIDEIN_CPUS": 4,
            "GLIDEIN_MaxMemMBs": 15000,
            "GLIDEIN_Cost": 0.25,
            "GLIDEIN_Supports_GPU": False,
            "GLIDEIN_Supported_VOs": ["cms", "atlas"],
        },
        "start": 'TARGET.RequestMemory <= 15000 && TARGET.Owner =!= "banned"',
        "in_downtime": False,
        "allow_privileged_overlays": True,
        "key_id": ring.current_key_id,
        "key_algorithm": "x25519",
        "public_key_pem": ring.public_key_pem(),
    }
    fields.update(changes)
    return EntryAd(**fields)  # type: ignore[arg-type]


def job(**attrs: object) -> classad2.ClassAd:
    ad = classad2.ClassAd()
    for attr, value in attrs.items():
        ad[attr] = classad2.ExprTree(value) if attr == "Requirements" else value
    return ad


# -- round trips ----------------------------------------------------------------------------------


@WIRES
def test_entry_ad_survives_the_wire_unchanged(ring: FactoryKeyring, wire: Wire) -> None:
    entry = make_entry(ring)
    assert parse_entry_ad(wire(build_entry_ad(entry))) == entry


def test_entry_ad_without_optional_limits_survives_the_wire(ring: FactoryKeyring) -> None:
    entry = make_entry(ring, limits=EntryLimits(), attributes={}, start="true")
    ad = build_entry_ad(entry)
    assert "GlideinConfigPerFrontendMaxGlideins" not in ad
    assert parse_entry_ad(old_syntax(ad)) == entry


@WIRES
def test_request_ad_survives_the_wire_unchanged(ring: FactoryKeyring, wire: Wire) -> None:
    request = make_request(
        make_entry(ring),
        frontend="vo1-frontend",
        group="main",
        identity="vo1-frontend@vo1.example.org",
        idle=12,
        max_running=80,
        remove_excess=RemoveExcess.IDLE,
        credential_ids=("vo1-proxy", "vo1-aws"),
        now=NOW,
    )
    parsed = parse_request_ad(wire(build_request_ad(request)))
    assert parsed == request
    assert parsed is not None
    assert parsed.name == "ec2_us_east_1@gfactory-1@vo1-frontend.main"
    assert parsed.request_name == "ec2_us_east_1@gfactory-1"


@WIRES
def test_credential_ad_survives_the_wire_unchanged(ring: FactoryKeyring, wire: Wire) -> None:
    cred = AwsKeyPairCredential(
        id="vo1-aws",
        trust_domain="grid",
        access_key_id="AKIAIOSFODNN7EXAMPLE",
        secret_access_key=AWS_SECRET,
    )
    cred_ad = make_credential_ad(
        factory="gfactory-1",
        public_key_pem=ring.public_key_pem(),
        frontend="vo1-frontend",
        identity="vo1-frontend@vo1.example.org",
        credentials=[cred],
        now=NOW,
    )
    ad = build_credential_ad(cred_ad)
    assert AWS_SECRET not in str(ad)
    assert parse_credential_ad(wire(ad)) == cred_ad


@WIRES
def test_factory_client_ad_survives_the_wire_unchanged(wire: Wire) -> None:
    monitor = FactoryClientAd(
        factory="gfactory-1",
        entry="ec2_us_east_1",
        frontend="vo1-frontend",
        group="main",
        idle=3,
        running=40,
        retiring=2,
        zombie=1,
        requested_idle=12,
        requested_max_running=80,
        request_issued_at=NOW - timedelta(seconds=30),
        effective_idle=10,
        effective_max_running=50,
        limits_applied=("entry_max_idle", "frontend_max_glideins"),
        last_error='RunInstances: InsufficientInstanceCapacity "m5.large"',
        last_error_at=NOW - timedelta(minutes=2),
        updated_at=NOW,
    )
    parsed = parse_factory_client_ad(wire(build_factory_client_ad(monitor)))
    assert parsed == monitor
    assert parsed is not None
    assert parsed.total == 46


def test_factory_client_ad_without_errors_leaves_them_out() -> None:
    monitor = FactoryClientAd(
        factory="f", entry="e", frontend="fe", group="g", running=1, updated_at=NOW
    )
    ad = build_factory_client_ad(monitor)
    assert "GlideinMonitorLastError" not in ad
    assert "GlideinMonitorRequestIssuedAt" not in ad
    assert parse_factory_client_ad(old_syntax(ad)) == monitor


@WIRES
def test_resource_ad_survives_the_wire_unchanged(wire: Wire) -> None:
    resource = ResourceAd(
        factory="gfactory-1",
        entry="ec2_us_east_1",
        frontend="vo1-frontend",
        group="main",
        matching_idle=500,
        effective_idle=123.5,
        matching_running=40,
        running_here=38,
        requested_idle=12,
        requested_max_running=80,
        curb_reasons=("group max_idle 12 reached", "ramp-up: 10 per cycle"),
        updated_at=NOW,
    )
    ad = build_resource_ad(resource)
    assert ad["GlideFactoryName"] == "ec2_us_east_1@gfactory-1"
    assert ad["GlideClientName"] == "vo1-frontend.main"
    assert parse_resource_ad(wire(ad)) == resource


# -- typed values for matching --------------------------------------------------------------------


def test_entry_ad_values_are_typed_classad_values_not_strings(ring: FactoryKeyring) -> None:
    ad = new_syntax(build_entry_ad(make_entry(ring)))
    assert ad["MyType"] == ad["GlideinMyType"] == "glidefactory"
    assert ad["GwmsProtocolVersion"] == 1
    assert ad["Name"] == "ec2_us_east_1@gfactory-1"
    assert ad["GLIDEIN_CPUS"] == 4
    assert ad["GLIDEIN_Cost"] == 0.25
    assert ad["GLIDEIN_Supports_GPU"] is False
    assert ad["GLIDEIN_InstanceTypes"] == ["m5.large", "m5.xlarge"]
    assert ad["GLIDEIN_SupportedAuthenticationMethod"] == ["idtoken", "x509_proxy"]
    assert ad["GLIDEIN_Max_Walltime"] == 43200
    assert isinstance(ad.lookup("GLIDEIN_Start"), classad2.ExprTree)
    assert "\n" not in ad["PubKeyValue"]


@pytest.mark.parametrize(
    ("site", "memory", "expected"),
    [("AWS_US_EAST_1", 8000, True), ("CERN", 8000, False), ("AWS_US_EAST_1", 64000, False)],
)
def test_job_requirements_evaluate_against_a_built_entry_ad(
    ring: FactoryKeyring, site: str, memory: int, expected: bool
) -> None:
    entry_ad = old_syntax(build_entry_ad(make_entry(ring)))
    user_job = job(
        RequestMemory=memory,
        Requirements=f'TARGET.GLIDEIN_Site == "{site}" '
        "&& TARGET.GLIDEIN_MaxMemMBs >= RequestMemory "
        '&& member("idtoken", TARGET.GLIDEIN_SupportedAuthenticationMethod) '
        "&& TARGET.GLIDEIN_CPUS >= 2",
    )
    assert user_job.lookup("Requirements").eval(scope=user_job, target=entry_ad) is expected


@pytest.mark.parametrize(
    ("memory", "owner", "expected"),
    [(2000, "alice", True), (32000, "alice", False), (2000, "banned", False)],
)
def test_entry_start_expression_evaluates_with_the_job_as_target(
    ring: FactoryKeyring, memory: int, owner: str, expected: bool
) -> None:
    entry_ad = new_syntax(build_entry_ad(make_entry(ring)))
    user_job = job(RequestMemory=memory, Owner=owner)
    assert entry_ad.lookup("GLIDEIN_Start").eval(scope=entry_ad, target=user_job) is expected


def test_collector_stamps_are_read_but_never_taken_for_site_attributes(
    ring: FactoryKeyring,
) -> None:
    ad = build_entry_ad(make_entry(ring))
    ad["AuthenticatedIdentity"] = "gfactory@factory.example.org"
    ad["LastHeardFrom"] = 1795000000
    ad["UpdateSequenceNumber"] = 7
    parsed = parse_entry_ad(new_syntax(ad))
    assert parsed is not None
    assert parsed.authenticated_identity == "gfactory@factory.example.org"
    assert "LastHeardFrom" not in parsed.attributes
    assert "UpdateSequenceNumber" not in parsed.attributes


def test_timestamps_travel_as_whole_epoch_seconds(ring: FactoryKeyring) -> None:
    request = make_request(
        make_entry(ring),
        frontend="fe",
        group="g",
        identity="fe@example.org",
        idle=1,
        max_running=1,
        now=NOW + timedelta(microseconds=654321),
    )
    ad = build_request_ad(request)
    assert ad["ReqIssuedAt"] == int(NOW.timestamp())
    assert request.issued_at == NOW


# -- versions ----------------------------------------------------------------------------------


def _built(kind: AdKind, ring: FactoryKeyring) -> classad2.ClassAd:
    entry = make_entry(ring)
    if kind is AdKind.ENTRY:
        return build_entry_ad(entry)
    if kind is AdKind.REQUEST:
        request = make_request(
            entry, frontend="fe", group="g", identity="fe@x", idle=1, max_running=2, now=NOW
        )
        return build_request_ad(request)
    if kind is AdKind.CREDENTIALS:
        return build_credential_ad(
            make_credential_ad(
                factory="gfactory-1",
                public_key_pem=ring.public_key_pem(),
                frontend="fe",
                identity="fe@x",
                credentials=[],
                now=NOW,
            )
        )
    if kind is AdKind.FACTORY_CLIENT:
        return build_factory_client_ad(
            FactoryClientAd(factory="f", entry="e", frontend="fe", group="g", updated_at=NOW)
        )
    return build_resource_ad(
        ResourceAd(factory="f", entry="e", frontend="fe", group="g", updated_at=NOW)
    )


PARSERS: dict[AdKind, Callable[[classad2.ClassAd], object]] = {
    AdKind.ENTRY: parse_entry_ad,
    AdKind.REQUEST: parse_request_ad,
    AdKind.CREDENTIALS: parse_credential_ad,
    AdKind.FACTORY_CLIENT: parse_factory_client_ad,
    AdKind.RESOURCE: parse_resource_ad,
}


@pytest.mark.parametrize("kind", list(AdKind))
def test_ad_of_a_newer_protocol_version_is_skipped_with_one_warning_per_ad_and_version(
    ring: FactoryKeyring, kind: AdKind, caplog: pytest.LogCaptureFixture
) -> None:
    ad = _built(kind, ring)
    ad["Name"] = f"from-the-future-{uuid.uuid4().hex}"
    ad["GwmsProtocolVersion"] = 2
    ad["SomethingNew"] = classad2.ExprTree("[ a = 1 ]")
    with caplog.at_level(logging.WARNING, logger="gwms.protocol"):
        assert PARSERS[kind](ad) is None
        assert PARSERS[kind](ad) is None
        ad["GwmsProtocolVersion"] = 3
        assert PARSERS[kind](ad) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert kind.value in warnings[0]
    assert "version 2" in warnings[0]
    assert "version 3" in warnings[1]


@pytest.mark.parametrize("kind", list(AdKind))
def test_every_ad_kind_parses_what_it_built(ring: FactoryKeyring, kind: AdKind) -> None:
    assert PARSERS[kind](old_syntax(_built(kind, ring))) is not None


# -- malformed ads ------------------------------------------------------------------------------


MALFORMED = [
    ("ReqIdleGlideins", '"five"', "expected an integer"),
    ("ReqIdleGlideins", "-1", "greater than or equal to 0"),
    ("ReqIdleGlideins", "1 + 2", "expected an integer"),
    ("ReqMaxGlideins", None, "is missing"),
    ("ReqRemoveExcess", '"SOME"', "expected one of NO/IDLE/WAIT/ALL"),
    ("ReqCredentialIds", '"a,b"', "expected a list of strings"),
    ("ReqIssuedAt", "true", "expected an integer"),
    ("ClientName", '"other.group"', "expected 'fe.g'"),
    ("FrontendName", '"has space"', "must be a name"),
    ("MyType", '"glidefactory"', "expected 'glideclient'"),
    ("GwmsProtocolVersion", None, "expected an integer"),
    ("GwmsProtocolVersion", "0", "which no gwms version ever spoke"),
]


@pytest.mark.parametrize(("attr", "value", "problem"), MALFORMED)
def test_malformed_request_ad_is_an_error_naming_ad_and_attribute(
    ring: FactoryKeyring, attr: str, value: str | None, problem: str
) -> None:
    ad = _built(AdKind.REQUEST, ring)
    if value is None:
        del ad[attr]
    else:
        ad[attr] = classad2.ExprTree(value)
    with pytest.raises(ProtocolError) as caught:
        parse_request_ad(new_syntax(ad))
    message = str(caught.value)
    assert "glideclient ad 'e" in message
    assert f"attribute {attr} " in message
    assert problem in message


def test_entry_ad_whose_key_id_is_not_its_key_is_refused(ring: FactoryKeyring) -> None:
    ad = build_entry_ad(make_entry(ring))
    ad["PubKeyID"] = "0123456789abcdef"
    expected = "attribute PubKeyID is invalid: key id 0123456789abcdef is not the id"
    with pytest.raises(ProtocolError, match=expected):
        parse_entry_ad(ad)


def test_entry_ad_with_a_non_expression_start_keeps_the_literal_as_expression(
    ring: FactoryKeyring,
) -> None:
    ad = build_entry_ad(make_entry(ring))
    ad["GLIDEIN_Start"] = True
    parsed = parse_entry_ad(ad)
    assert parsed is not None
    assert parsed.start == "true"


def test_credential_ad_count_must_match_its_credentials(ring: FactoryKeyring) -> None:
    ad = _built(AdKind.CREDENTIALS, ring)
    ad["NumberOfCredentials"] = 1
    with pytest.raises(ProtocolError, match="attribute NumberOfCredentials is 1 but"):
        parse_credential_ad(ad)


def test_a_non_classad_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ProtocolError, match="expected a glideclient ClassAd, got dict"):
        parse_request_ad({"Name": "x"})  # type: ignore[arg-type]


# -- builders refuse what would not survive -----------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        ({"FactoryName": "other"}, "set by gwms itself"),
        ({"glidein_start": "true"}, "set by gwms itself"),
        ({"AuthenticatedIdentity": "me"}, "set by gwms itself"),
        ({"GLIDEIN_Site": "two\nlines"}, "one line"),
        ({"GLIDEIN_Big": 2**64}, "64-bit"),
        ({"not an attr": 1}, "not a ClassAd attribute name"),
        ({"GLIDEIN_Map": {"a": 1}}, "is not text, a number"),
    ],
)
def test_entry_model_refuses_site_attributes_that_cannot_go_on_the_wire(
    ring: FactoryKeyring, attributes: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        make_entry(ring, attributes=attributes)


def test_entry_model_refuses_a_start_that_is_not_an_expression(ring: FactoryKeyring) -> None:
    with pytest.raises(ValidationError, match="is not a ClassAd expression"):
        make_entry(ring, start="RequestMemory <=")


def test_models_never_show_sealed_values_or_keys_in_repr(ring: FactoryKeyring) -> None:
    request = parse_request_ad(_built(AdKind.REQUEST, ring))
    entry = make_entry(ring)
    for model in (request, entry):
        assert "gwms-seal" not in repr(model)
        assert "PUBLIC KEY" not in repr(model)


@pytest.mark.parametrize("kind", list(AdKind))
def test_every_attribute_a_builder_writes_is_documented_for_operators(
    ring: FactoryKeyring, kind: AdKind
) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    section = docs[docs.index(f"(`{kind.value}`)") :]
    common = docs[: docs.index("## Entry ad")]
    site = set(make_entry(ring).attributes) if kind is AdKind.ENTRY else set()
    written = set(_built(kind, ring).keys()) - site
    missing = [a for a in written if f"`{a}`" not in section and f"`{a}`" not in common]
    assert missing == []
