"""UserData v1 codec: round trips, the schema rules, provider limits, hostile input, legacy form."""

from __future__ import annotations

import base64
import copy
import email.parser
import gzip
import hashlib
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gwms_context import userdata
from gwms_context.userdata import (
    CONTENT_TYPE,
    GlideinUserData,
    UserDataError,
    UserDataTooLarge,
    build_mime,
    check_size,
    decode,
    encode,
    validate,
)

PROXY_CERT_INFO_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
# ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage id-ppl-inheritAll } }
PROXY_CERT_INFO_INHERIT_ALL = bytes.fromhex("300c300a06082b06010505071501")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------- real credentials


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    signing_key: rsa.RSAPrivateKey,
    *,
    ca: bool,
    proxy: bool = False,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=24))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if proxy:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(PROXY_CERT_INFO_OID, PROXY_CERT_INFO_INHERIT_ALL),
            critical=True,
        )
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def proxy_chain_pem() -> str:
    """A real RFC 3820 proxy file: proxy cert, proxy key, user cert, CA cert (RSA 2048)."""
    keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
    ca_key, user_key, proxy_key = keys
    base = [
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org"),
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "gwms-cloud-test"),
    ]
    ca_name = x509.Name([*base, x509.NameAttribute(NameOID.COMMON_NAME, "Test Grid CA")])
    user_name = x509.Name([*base, x509.NameAttribute(NameOID.COMMON_NAME, "VO Pilot vo1")])
    proxy_name = x509.Name([*user_name, x509.NameAttribute(NameOID.COMMON_NAME, "1234567890")])
    ca_cert = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    user_cert = _cert(user_name, ca_name, user_key.public_key(), ca_key, ca=False)
    proxy_cert = _cert(
        proxy_name, user_name, proxy_key.public_key(), user_key, ca=False, proxy=True
    )
    pem = serialization.Encoding.PEM
    key_pem = proxy_key.private_bytes(
        pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    chain = [proxy_cert.public_bytes(pem), key_pem, user_cert.public_bytes(pem)]
    chain.append(ca_cert.public_bytes(pem))
    return b"".join(chain).decode("ascii")


PILOT_ARGS = [
    "-v", "std", "-name", "gfactory_instance", "-entry", "ec2_us_east_1",
    "-clientname", "vo1-frontend.main", "-schedd", "schedd_glideins2@factory.example.org",
    "-proxy", "None", "-factory", "gfactory-local", "-web", "http://127.0.0.1:8319/web",
    "-sign", "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678", "-signentry",
    "0f1e2d3c4b5a69788796a5b4c3d2e1f001234567", "-signtype", "sha1",
    "-descript", "description.k3lmnO.cfg", "-descriptentry", "description.k3lmnO.cfg",
    "-dir", "AUTO", "-param_GLIDEIN_Client", "vo1-frontend.main",
    "-submitcredid", "vo1_pilot", "-slotslayout", "partitionable",
    "-clientweb", "http://127.0.0.1:8320/vofrontend/stage",
    "-clientsign", "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef", "-clientsigntype", "sha1",
    "-clientdescript", "description.k3lm2b.cfg", "-clientgroup", "main",
    "-param_GLIDEIN_Collector", "127.0.0.1.colon,9618", "-cluster", "42", "-subcluster", "7",
]  # fmt: skip


def full_document(proxy: str) -> dict[str, Any]:
    """Every field set, none of them to its default."""
    return {
        "version": 1,
        "factory": "gfactory-local",
        "entry": "ec2_us_east_1",
        "client": "vo1-frontend.main",
        "glidein_id": "gl-20261122-000001-ab12cd",
        "issued_at": 1795000000,
        "web_base": "http://127.0.0.1:8319/web",
        "files": {
            "glidein_startup.sh": sha("startup"),
            "condor.tgz": sha("condor"),
            "description.k3lmnO.cfg": sha("descript"),
        },
        "pilot_args": ["-collector", "127.0.0.1:9618", "-param with space", "ünïcode"],
        "lifetimes": {"max_seconds": 86400, "retire_seconds": 72000},
        "log_upload": {
            "url": "http://127.0.0.1:8319/logs/ec2_us_east_1/vo1-frontend.main/gl-1",
            "token": "log-token-s3cr3t-value",
        },
        "overlays": [
            {
                "name": "vo-setup",
                "url": "http://127.0.0.1:8320/vo-setup.tar.gz",
                "sha256": sha("vo-setup"),
                "privileged": True,
            },
            {
                "name": "cvmfs-config",
                "url": "https://vo.example.org/cvmfs.tar.gz",
                "sha256": sha("cvmfs"),
                "privileged": False,
            },
        ],
        "allow_privileged_overlays": True,
        "disable_shutdown": True,
        "credentials": {"x509_proxy": proxy, "idtoken": "eyJhbGciOiJSUzI1NiJ9.idtoken-secret"},
    }


SMALL_PROXY = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def minimal_document() -> dict[str, Any]:
    """Only the required fields."""
    doc = full_document(SMALL_PROXY)
    for optional in ("overlays", "allow_privileged_overlays", "disable_shutdown", "pilot_args"):
        del doc[optional]
    del doc["credentials"]["idtoken"]
    return doc


def gzip_raw(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def mime(*parts: tuple[str, bytes]) -> bytes:
    """A multipart/mixed document written by the stdlib MIME writer (not by the codec)."""
    from email.mime.application import MIMEApplication
    from email.mime.multipart import MIMEMultipart

    message = MIMEMultipart()
    for content_type, body in parts:
        _maintype, subtype = content_type.split("/")
        part = MIMEApplication(body, _subtype=subtype)
        part.replace_header("Content-Type", content_type)
        message.attach(part)
    return message.as_bytes()


# ---------------------------------------------------------------------------- round trips


def test_every_field_and_extra_part_survives_an_encode_decode_round_trip(
    proxy_chain_pem: str,
) -> None:
    document = full_document(proxy_chain_pem)
    cloud_config = b"#cloud-config\nruncmd:\n  - [touch, /run/vo-ready]\n"
    binary = bytes(range(256)) + b"\r\n\r"
    decoded = decode(
        encode(document, [("text/cloud-config", cloud_config), ("application/x-vo", binary)])
    )
    assert decoded.document == document
    assert decoded.extra_parts == [
        ("text/cloud-config", cloud_config),
        ("application/x-vo", binary),
    ]
    assert decoded.legacy is False
    assert decoded.glidein_id == "gl-20261122-000001-ab12cd"
    assert decoded.max_seconds == 86400
    assert decoded.retire_seconds == 72000
    assert decoded.log_upload_token == "log-token-s3cr3t-value"
    assert decoded.x509_proxy == proxy_chain_pem
    assert decoded.idtoken.startswith("eyJ")
    assert decoded.overlays[0]["privileged"] is True


def test_omitted_optional_fields_decode_to_their_documented_defaults() -> None:
    decoded = decode(encode(minimal_document()))
    assert decoded.overlays == []
    assert decoded.pilot_args == []
    assert decoded.allow_privileged_overlays is False
    assert decoded.disable_shutdown is False
    assert decoded.idtoken is None
    assert decoded.extra_parts == []


def test_overlay_privileged_flag_defaults_to_false() -> None:
    document = minimal_document()
    document["overlays"] = [{"name": "a", "url": "http://127.0.0.1/a.tgz", "sha256": sha("a")}]
    assert decode(encode(document)).overlays[0]["privileged"] is False


def test_validate_returns_a_normalised_copy_and_leaves_the_input_alone() -> None:
    document = minimal_document()
    before = copy.deepcopy(document)
    normalised = validate(document)
    assert document == before
    assert normalised["overlays"] == []
    normalised["files"]["x"] = "y"
    assert "x" not in document["files"]


def test_encoding_the_same_document_twice_gives_identical_bytes() -> None:
    first = encode(minimal_document(), [("text/cloud-config", "#cloud-config\n")])
    second = encode(minimal_document(), [("text/cloud-config", "#cloud-config\n")])
    assert first == second
    assert first[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME is zero


def test_encoded_form_is_gzip_mime_a_cloud_init_style_reader_accepts() -> None:
    raw = encode(minimal_document(), [("text/cloud-config", "#cloud-config\nruncmd: []\n")])
    message = email.parser.BytesParser().parsebytes(gzip.decompress(raw))
    assert message.get_content_type() == "multipart/mixed"
    parts = message.get_payload()
    assert [part.get_content_type() for part in parts] == [CONTENT_TYPE, "text/cloud-config"]
    assert json.loads(parts[0].get_payload(decode=True))["version"] == 1


def test_decoder_accepts_mime_written_by_another_mime_writer() -> None:
    body = json.dumps(minimal_document()).encode()
    raw = gzip_raw(mime((CONTENT_TYPE, body), ("text/cloud-config", b"#cloud-config\n")))
    decoded = decode(raw)
    assert decoded.document == validate(minimal_document())
    assert decoded.extra_parts == [("text/cloud-config", b"#cloud-config\n")]


def test_real_size_userdata_with_args_proxy_chain_and_two_overlays_fits_in_8kb(
    proxy_chain_pem: str,
) -> None:
    document = full_document(proxy_chain_pem)
    document["pilot_args"] = PILOT_ARGS
    assert proxy_chain_pem.count("BEGIN CERTIFICATE") == 3
    assert proxy_chain_pem.count("BEGIN RSA PRIVATE KEY") == 1
    raw = encode(document, limit="ec2")
    print(f"real-size UserData: {len(raw)} bytes raw (proxy PEM {len(proxy_chain_pem)} bytes)")
    assert len(raw) <= 8 * 1024
    assert decode(raw).x509_proxy == proxy_chain_pem


# ---------------------------------------------------------------------------- schema rules


def _set(path: str, value: Any) -> Any:
    def mutate(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()

SCHEMA_VIOLATIONS = [
    ("overlays.1.sha256", "ABC" * 21 + "D", "overlays[1].sha256: expected 64 lowercase hex"),
    ("overlays.0.sha256", sha("x").upper(), "overlays[0].sha256: expected 64 lowercase hex"),
    ("overlays.1.name", "../etc", "overlays[1].name: expected a plain file name"),
    ("overlays.1.privileged", "yes", "overlays[1].privileged: expected true or false"),
    ("overlays.1.url", "file:///etc/passwd", "overlays[1].url: expected an http"),
    ("overlays.1.name", "vo-setup", "overlays[1].name: duplicate overlay name"),
    (
        "files",
        {"../glidein_startup.sh": sha("a")},
        "files['../glidein_startup.sh']: expected a plain",
    ),
    ("files", {"sub/dir.sh": sha("a")}, "expected a plain file name"),
    ("files", {"ok.sh": "not-a-hash"}, "files[ok.sh]: expected 64 lowercase hex"),
    ("lifetimes.retire_seconds", 90000, "lifetimes.retire_seconds: must not exceed max_seconds"),
    ("lifetimes.max_seconds", 0, "lifetimes.max_seconds: must be at least 1"),
    ("lifetimes.max_seconds", 86400.5, "lifetimes.max_seconds: expected an integer"),
    ("issued_at", True, "issued_at: expected an integer, found a boolean"),
    ("factory", _DELETE, "factory: required field is missing"),
    ("credentials.x509_proxy", _DELETE, "credentials.x509_proxy: required field is missing"),
    ("credentials.x509_proxy", "hello", "credentials.x509_proxy: expected a PEM proxy chain"),
    ("log_upload.token", "", "log_upload.token: must not be empty"),
    ("web_base", "ftp://127.0.0.1/web", "web_base: expected an http:// or https:// URL"),
    ("web_base", "http://", "web_base: expected an http:// or https:// URL with a host"),
    ("glidein_id", "gl 1", "glidein_id: expected 1-255 printable ASCII"),
    ("pilot_args", ["ok", 3], "pilot_args[1]: expected a string, found an integer"),
    ("disable_shutdown", "false", "disable_shutdown: expected true or false"),
    ("colour", "blue", "colour: unknown field; remove it"),
    ("lifetimes.grace", 5, "lifetimes.grace: unknown field"),
    ("version", 2, "version: found version 2, this decoder supports version 1"),
    ("version", "1", "version: expected an integer format version"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    SCHEMA_VIOLATIONS,
    ids=[f"{v[0]}-{i}" for i, v in enumerate(SCHEMA_VIOLATIONS)],
)
def test_schema_violation_is_one_line_naming_the_field(path: str, value: Any, message: str) -> None:
    document = full_document(SMALL_PROXY)
    _set(path, value)(document)
    with pytest.raises(UserDataError) as caught:
        validate(document)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert "s3cr3t" not in text


@pytest.mark.parametrize(("path", "value", "message"), SCHEMA_VIOLATIONS[:6])
def test_decoder_refuses_a_document_breaking_the_schema(
    path: str, value: Any, message: str
) -> None:
    document = full_document(SMALL_PROXY)
    _set(path, value)(document)
    raw = gzip_raw(mime((CONTENT_TYPE, json.dumps(document).encode())))
    with pytest.raises(
        UserDataError, match=r"^" + message.split(":", maxsplit=1)[0].replace("[", r"\[")
    ):
        decode(raw)


def test_a_newer_format_version_is_reported_before_any_unknown_field() -> None:
    document = minimal_document()
    document["version"] = 2
    document["new_v2_field"] = {"x": 1}
    with pytest.raises(UserDataError, match="found version 2, this decoder supports version 1"):
        decode(gzip_raw(mime((CONTENT_TYPE, json.dumps(document).encode()))))


def test_document_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(UserDataError, match=r"^document: expected a mapping"):
        validate(["version", 1])  # type: ignore[arg-type]


def test_extra_part_may_not_claim_the_glidein_content_type() -> None:
    with pytest.raises(UserDataError, match=r"extra_parts\[0\]: content type .* is reserved"):
        encode(minimal_document(), [(CONTENT_TYPE, b"{}")])
    with pytest.raises(UserDataError, match=r"extra_parts\[0\]: expected a MIME content type"):
        encode(minimal_document(), [("text/cloud-config\nX-Injected: 1", b"")])


# ---------------------------------------------------------------------------- provider limits


def _incompressible_overlays(count: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"overlay-{i}-{sha(str(i))[:40]}",
            "url": f"http://127.0.0.1/{sha('u' + str(i))}/{sha('v' + str(i))}.tgz",
            "sha256": sha(f"overlay {i}"),
        }
        for i in range(count)
    ]


def test_over_the_ec2_limit_encode_raises_too_large_with_provider_limit_and_size() -> None:
    document = minimal_document()
    document["overlays"] = _incompressible_overlays(120)
    with pytest.raises(UserDataTooLarge) as caught:
        encode(document, limit="ec2")
    error = caught.value
    assert error.provider == "ec2"
    assert error.limit == 16384
    assert error.size > 16384
    text = str(error)
    assert "ec2 limit of 16,384 bytes" in text
    assert "raw (gzip) bytes" in text
    assert f"{error.size:,} bytes" in text
    assert "fewer or smaller overlays" in text
    assert "shorter proxy chain" in text
    assert len(encode(document, limit="gce")) == error.size


def test_openstack_limit_is_measured_on_the_base64_of_the_raw_bytes() -> None:
    raw = bytes(50_000)  # 50,000 raw bytes: under 65,535 raw, 66,668 once base64-encoded
    assert check_size(raw, "azure") == 65535 - 50_000
    with pytest.raises(UserDataTooLarge) as caught:
        check_size(raw, "openstack")
    assert caught.value.provider == "openstack"
    assert caught.value.size == len(base64.b64encode(raw)) == 66_668
    assert "base64" in str(caught.value)
    assert check_size(bytes(49_149), "openstack") == 65535 - 65532


def test_an_integer_limit_is_raw_bytes_and_none_means_no_check() -> None:
    assert check_size(b"x" * 10, 10) == 0
    with pytest.raises(UserDataTooLarge) as caught:
        check_size(b"x" * 11, 10)
    assert caught.value.provider is None
    assert check_size(b"x" * 10**6, None) is None


@pytest.mark.parametrize("limit", ["aws", 0, -5, True, 1.5])
def test_an_unknown_limit_is_a_user_error(limit: Any) -> None:
    with pytest.raises(UserDataError, match=r"^limit: "):
        check_size(b"x", limit)


# ---------------------------------------------------------------------------- hostile input


@pytest.fixture
def valid_raw() -> bytes:
    return encode(full_document(SMALL_PROXY), [("text/cloud-config", "#cloud-config\n")])


def test_plain_text_that_is_neither_gzip_nor_legacy_is_refused() -> None:
    with pytest.raises(UserDataError, match=r"neither gzip .* nor the legacy glideinWMS form"):
        decode(b"#!/bin/sh\necho hello\n")


def test_empty_user_data_is_refused() -> None:
    with pytest.raises(UserDataError, match="empty"):
        decode(b"")


def test_truncated_gzip_is_refused(valid_raw: bytes) -> None:
    for cut in (3, 10, len(valid_raw) // 2, len(valid_raw) - 1):
        with pytest.raises(UserDataError, match=r"truncated|corrupt"):
            decode(valid_raw[:cut])


def test_corrupt_compressed_data_is_refused(valid_raw: bytes) -> None:
    broken = bytearray(valid_raw)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(UserDataError, match=r"corrupt gzip data|truncated"):
        decode(bytes(broken))


def test_junk_appended_after_the_gzip_stream_is_refused(valid_raw: bytes) -> None:
    with pytest.raises(UserDataError, match="unexpected data after the gzip stream"):
        decode(valid_raw + b"\x00junk")


def test_input_over_one_mebibyte_is_refused_before_decompressing() -> None:
    with pytest.raises(UserDataError, match="over the 1,048,576-byte maximum"):
        decode(b"\x1f\x8b" + bytes(userdata.MAX_RAW_BYTES))


def test_decompression_bomb_is_refused_while_streaming() -> None:
    bomb = gzip_raw(bytes(userdata.MAX_DECOMPRESSED_BYTES + 1))
    assert len(bomb) < 10_000
    with pytest.raises(UserDataError, match="decompresses to more than 4,194,304 bytes"):
        decode(bomb)


def test_gzip_of_something_that_is_not_mime_multipart_is_refused() -> None:
    with pytest.raises(UserDataError, match="not a MIME multipart/mixed document"):
        decode(gzip_raw(json.dumps(minimal_document()).encode()))


def test_mime_without_a_glidein_part_is_refused() -> None:
    with pytest.raises(UserDataError, match=re.escape(f"no {CONTENT_TYPE} part")):
        decode(gzip_raw(mime(("text/cloud-config", b"#cloud-config\n"))))


def test_mime_with_two_glidein_parts_is_refused() -> None:
    body = json.dumps(minimal_document()).encode()
    with pytest.raises(UserDataError, match=r"2 .* parts, expected one"):
        decode(gzip_raw(mime((CONTENT_TYPE, body), (CONTENT_TYPE, body))))


def test_mime_cut_before_its_closing_boundary_is_refused(valid_raw: bytes) -> None:
    text = gzip.decompress(valid_raw)
    with pytest.raises(UserDataError, match="malformed MIME"):
        decode(gzip_raw(text[: text.rindex(b"--gwms-")]))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"version": 1, "version": 1}', "field 'version' appears twice"),
        (b'{"version": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|invalid JSON"),
        (b"[1, 2]", "document: expected a mapping"),
    ],
)
def test_glidein_part_that_is_not_a_valid_json_object_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(UserDataError, match=message):
        decode(gzip_raw(mime((CONTENT_TYPE, body))))


def test_decoder_accepts_only_bytes_like_input() -> None:
    with pytest.raises(UserDataError, match="expected bytes"):
        decode(12345)  # type: ignore[arg-type]


def test_codec_mime_is_parsed_back_without_the_codec_knowing_the_boundary() -> None:
    text = build_mime(b'{"a":1}', [("text/plain", b"--not-a-boundary\n")])
    message = email.parser.BytesParser().parsebytes(text)
    assert [p.get_payload(decode=True) for p in message.get_payload()] == [
        b'{"a":1}',
        b"--not-a-boundary\n",
    ]


# ---------------------------------------------------------------------------- secrets


def test_redacted_replaces_every_secret_with_its_size(proxy_chain_pem: str) -> None:
    decoded = decode(encode(full_document(proxy_chain_pem)))
    redacted = decoded.redacted()
    assert redacted["credentials"]["x509_proxy"] == f"<redacted: {len(proxy_chain_pem)} bytes>"
    assert redacted["credentials"]["idtoken"] == "<redacted: 35 bytes>"
    assert redacted["log_upload"]["token"] == "<redacted: 22 bytes>"
    assert redacted["log_upload"]["url"] == decoded.log_upload_url
    assert decoded.x509_proxy == proxy_chain_pem  # the original is untouched
    dumped = json.dumps(redacted)
    assert "PRIVATE KEY" not in dumped
    assert "s3cr3t" not in dumped
    assert "idtoken-secret" not in dumped


def test_repr_never_shows_a_secret(proxy_chain_pem: str) -> None:
    decoded = decode(encode(full_document(proxy_chain_pem)))
    for text in (repr(decoded), str(decoded)):
        assert "gl-20261122-000001-ab12cd" in text
        assert "BEGIN" not in text
        assert "s3cr3t" not in text
        assert "idtoken-secret" not in text


def test_a_null_idtoken_stays_null_when_redacted() -> None:
    assert decode(encode(minimal_document())).redacted()["credentials"]["idtoken"] is None


# ---------------------------------------------------------------------------- legacy glideinWMS

# The [glidein_startup]/[vm_properties] ini a glideinWMS factory writes for EC2/GCE entries
# (factory/glideFactoryLib.py), base64-encoded into USER_DATA.
LEGACY_INI = """[glidein_startup]
args = {args}
proxy_file_name = pilot_proxy
webbase= {web}

[vm_properties]
max_lifetime = {lifetime}
contextualization_type = EC2
disable_shutdown = {disable}
admin_email = UNSUPPORTED
email_logs = False
"""


def legacy_user_data(
    proxy: str,
    *,
    idtoken: str | None = None,
    lifetime: str = "21600",
    disable: str = "False",
    prefixes: bool = True,
) -> bytes:
    """What an instance receives from a glideinWMS factory through HTCondor's EC2 GAHP.

    ec2_user_data = "glideinwms_metadata=$ENV(USER_DATA)#### -cluster $(Cluster) -subcluster
    $(Process)####" and ec2_user_data_file (appended) = "[<idtoken>####]glidein_credentials=
    <base64 gzip proxy>". GCE delivers the two metadata values without the `key=` prefixes.
    """
    args = " ".join(a for a in PILOT_ARGS[:-4])  # the factory's args stop before -cluster
    ini = LEGACY_INI.format(
        args=args, web="http://127.0.0.1:8319/web", lifetime=lifetime, disable=disable
    )
    metadata = base64.b64encode(ini.encode()).decode()
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb") as handle:
        handle.write(proxy.encode())
    credentials = base64.b64encode(compressed.getvalue()).decode()
    if prefixes:
        metadata, credentials = (
            f"glideinwms_metadata={metadata}",
            f"glidein_credentials={credentials}",
        )
    credential_file = credentials if idtoken is None else f"{idtoken}\n####{credentials}"
    return f"{metadata}#### -cluster 42 -subcluster 7####{credential_file}".encode()


def test_legacy_glideinwms_user_data_decodes_to_the_fields_it_carries(proxy_chain_pem: str) -> None:
    decoded = decode(legacy_user_data(proxy_chain_pem))
    assert decoded.legacy is True
    assert isinstance(decoded, GlideinUserData)
    assert decoded.web_base == "http://127.0.0.1:8319/web"
    assert decoded.pilot_args == PILOT_ARGS
    assert decoded.x509_proxy == proxy_chain_pem
    assert decoded.idtoken is None
    assert decoded.max_seconds == decoded.retire_seconds == 21600
    assert decoded.disable_shutdown is False
    assert (decoded.factory, decoded.entry, decoded.client) == (
        "gfactory-local",
        "ec2_us_east_1",
        "vo1-frontend.main",
    )
    assert decoded.glidein_id == "42.7"
    assert decoded.files == {}
    assert decoded.overlays == []
    assert decoded.issued_at is None
    assert decoded.log_upload_url is None
    assert decoded.legacy_ini["glidein_startup"]["proxy_file_name"] == "pilot_proxy"
    assert decoded.redacted()["credentials"]["x509_proxy"].startswith("<redacted: ")
    assert "BEGIN" not in repr(decoded)


def test_legacy_user_data_with_an_idtoken_and_disabled_shutdown_decodes() -> None:
    decoded = decode(legacy_user_data(SMALL_PROXY, idtoken="eyJtoken.part", disable="True"))
    assert decoded.idtoken == "eyJtoken.part"
    assert decoded.disable_shutdown is True


def test_legacy_gce_form_without_key_prefixes_decodes() -> None:
    decoded = decode(legacy_user_data(SMALL_PROXY, prefixes=False))
    assert decoded.legacy is True
    assert decoded.x509_proxy == SMALL_PROXY


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda raw: raw.replace(b"glidein_credentials=", b"glidein_credentials=!!"),
            "not valid base64",
        ),
        (lambda raw: raw.replace(b"####", b"##"), "found 1 .####.-separated field"),
        (lambda raw: raw + b"####extra####more", "'####'-separated fields"),
        (lambda raw: b"glideinwms_metadata=bm90IGFuIGluaQ==" + raw[raw.index(b"####") :], "ini"),
        (lambda raw: raw.replace(b"-cluster", "-clüster".encode()), "not ASCII"),
    ],
)
def test_broken_legacy_user_data_is_refused_with_one_line(mutate: Any, message: str) -> None:
    with pytest.raises(UserDataError, match=message) as caught:
        decode(mutate(legacy_user_data(SMALL_PROXY)))
    assert "\n" not in str(caught.value)


def test_legacy_user_data_whose_credentials_are_not_a_proxy_is_refused() -> None:
    raw = legacy_user_data("just some text, no certificate")
    with pytest.raises(UserDataError, match="glidein_credentials: expected a PEM proxy chain"):
        decode(raw)


def test_legacy_user_data_with_a_non_numeric_lifetime_is_refused() -> None:
    with pytest.raises(UserDataError, match="max_lifetime must be a positive integer"):
        decode(legacy_user_data(SMALL_PROXY, lifetime="one day"))
