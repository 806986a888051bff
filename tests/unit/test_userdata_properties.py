"""UserData codec properties: valid documents round-trip, hostile bytes raise only UserDataError."""

from __future__ import annotations

import gzip
import json
import string
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gwms_context.userdata import CONTENT_TYPE, UserDataError, decode, encode, validate

# Bounded so the whole file runs in a few seconds on a shared 2-core machine.
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PROXY = "-----BEGIN CERTIFICATE-----\nMIIBproxy\n-----END CERTIFICATE-----\n"

identifiers = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.:@+", min_size=1, max_size=40
).filter(lambda s: ".." not in s)
plain_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=30,
).filter(lambda s: ".." not in s and s != ".")
hashes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
hosts = st.sampled_from(["127.0.0.1", "127.0.0.1:8319", "factory.example.org", "[::1]:80"])
urls = st.builds(
    "{}://{}/{}".format,
    st.sampled_from(["http", "https"]),
    hosts,
    st.text(alphabet=string.ascii_letters + string.digits + "/._-~%", max_size=40),
)
secrets = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=80,
)
args = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=30,
    ),
    max_size=8,
)


@st.composite
def lifetimes(draw: st.DrawFn) -> dict[str, int]:
    max_seconds = draw(st.integers(min_value=1, max_value=10**7))
    return {
        "max_seconds": max_seconds,
        "retire_seconds": draw(st.integers(min_value=1, max_value=max_seconds)),
    }


@st.composite
def overlays(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(plain_names, max_size=3, unique=True))
    result = []
    for name in names:
        overlay = {"name": name, "url": draw(urls), "sha256": draw(hashes)}
        if draw(st.booleans()):
            overlay["privileged"] = draw(st.booleans())
        result.append(overlay)
    return result


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """Random valid documents; optional fields are sometimes left out."""
    credentials: dict[str, Any] = {"x509_proxy": PROXY + draw(secrets)}
    if draw(st.booleans()):
        credentials["idtoken"] = draw(st.none() | secrets)
    document: dict[str, Any] = {
        "version": 1,
        "factory": draw(identifiers),
        "entry": draw(identifiers),
        "client": draw(identifiers),
        "glidein_id": draw(identifiers),
        "issued_at": draw(st.integers(min_value=0, max_value=2**40)),
        "web_base": draw(urls),
        "files": draw(st.dictionaries(plain_names, hashes, max_size=4)),
        "lifetimes": draw(lifetimes()),
        "log_upload": {"url": draw(urls), "token": draw(secrets)},
        "credentials": credentials,
    }
    optional = {
        "pilot_args": args,
        "overlays": overlays(),
        "allow_privileged_overlays": st.booleans(),
        "disable_shutdown": st.booleans(),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            document[name] = draw(strategy)
    return document


content_types = st.sampled_from(
    ["text/cloud-config", "text/x-shellscript", "application/octet-stream", "text/plain"]
)
extra_parts = st.lists(st.tuples(content_types, st.binary(max_size=200)), max_size=3)


EXAMPLE_DOCUMENT = {
    "version": 1,
    "factory": "f",
    "entry": "e",
    "client": "c",
    "glidein_id": "g",
    "issued_at": 0,
    "web_base": "http://127.0.0.1/web",
    "files": {},
    "lifetimes": {"max_seconds": 2, "retire_seconds": 1},
    "log_upload": {"url": "http://127.0.0.1/logs", "token": "t"},
    "credentials": {"x509_proxy": PROXY},
}


@MANY
@given(document=documents(), parts=extra_parts)
@example(document=EXAMPLE_DOCUMENT, parts=[("text/plain", b"ends in CR\r"), ("text/plain", b"")])
@example(document=EXAMPLE_DOCUMENT, parts=[("text/plain", b"\n\nFrom x\n--\n"), ("a/b", b"\xff")])
def test_random_valid_documents_and_parts_round_trip_exactly(
    document: dict[str, Any], parts: list[tuple[str, bytes]]
) -> None:
    decoded = decode(encode(document, parts))
    assert decoded.document == validate(document)
    assert decoded.extra_parts == parts
    assert decoded.legacy is False


@st.composite
def valid_encodings(draw: st.DrawFn) -> bytes:
    return encode(draw(documents()), draw(extra_parts))


def _decode_only_user_data_error(data: bytes) -> None:
    """The decoder's contract: a result, or UserDataError with a one-line message."""
    try:
        decode(data)
    except UserDataError as exc:
        message = str(exc)
    else:
        return
    assert message
    assert "\n" not in message


@MANY
@given(data=st.binary(max_size=2048))
def test_random_bytes_only_ever_raise_user_data_error(data: bytes) -> None:
    _decode_only_user_data_error(data)


@FEW
@given(data=st.binary(max_size=512))
def test_random_bytes_after_a_gzip_magic_only_ever_raise_user_data_error(data: bytes) -> None:
    _decode_only_user_data_error(b"\x1f\x8b" + data)


@FEW
@given(raw=valid_encodings(), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_flipped_bit_in_a_valid_encoding_only_ever_raises_user_data_error(
    raw: bytes, position: int, bit: int
) -> None:
    mutated = bytearray(raw)
    mutated[position % len(mutated)] ^= 1 << bit
    _decode_only_user_data_error(bytes(mutated))


@FEW
@given(raw=valid_encodings(), cut=st.integers(min_value=0))
def test_a_truncated_valid_encoding_is_always_refused(raw: bytes, cut: int) -> None:
    truncated = raw[: cut % len(raw)]
    try:
        decode(truncated)
    except UserDataError:
        return
    raise AssertionError(f"truncated user data ({len(truncated)} of {len(raw)} bytes) decoded")


@FEW
@given(raw=valid_encodings(), junk=st.binary(min_size=1, max_size=64))
def test_junk_appended_to_a_valid_encoding_is_always_refused(raw: bytes, junk: bytes) -> None:
    try:
        decode(raw + junk)
    except UserDataError:
        return
    raise AssertionError("user data with trailing junk decoded")


@FEW
@given(
    raw=valid_encodings(),
    position=st.integers(min_value=0),
    replacement=st.binary(min_size=0, max_size=8),
)
def test_mutated_mime_inside_valid_gzip_only_ever_raises_user_data_error(
    raw: bytes, position: int, replacement: bytes
) -> None:
    """Past the gzip checks: exercises the MIME, JSON and schema layers with damaged text."""
    text = gzip.decompress(raw)
    at = position % len(text)
    mutated = text[:at] + replacement + text[at + len(replacement) + 1 :]
    _decode_only_user_data_error(gzip.compress(mutated, mtime=0))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@FEW
@given(
    document=documents(),
    which=st.integers(min_value=0),
    key=st.text(max_size=12),
    value=json_values,
)
def test_documents_with_random_json_in_any_field_only_ever_raise_user_data_error(
    document: dict[str, Any], which: int, key: str, value: Any
) -> None:
    """A random value replaces an existing field, or lands under a random new key."""
    fields = [*sorted(document), key]
    document[fields[which % len(fields)]] = value
    body = json.dumps(document).encode()
    mime_text = (
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: '
        + CONTENT_TYPE.encode()
        + b"\n\n"
        + body
        + b"\n--b--\n"
    )
    _decode_only_user_data_error(gzip.compress(mime_text, mtime=0))


@FEW
@given(tail=st.text(max_size=300))
def test_random_legacy_looking_text_only_ever_raises_user_data_error(tail: str) -> None:
    _decode_only_user_data_error(("glideinwms_metadata=" + tail).encode("utf-8", "surrogatepass"))
    _decode_only_user_data_error(("####".join([tail, tail, tail])).encode("utf-8", "surrogatepass"))
