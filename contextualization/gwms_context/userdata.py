"""UserData v1 codec: the one implementation the factory encodes with and the VM decodes with.

Wire form (docs/architecture.md, "UserData v1"): gzip of a MIME multipart/mixed document whose
`application/vnd.gwms.glidein+json` part carries the glidein document, so cloud-init accepts it
too. The decoder also reads the legacy glideinWMS form so old factories can drive new images.

VM-side code: stdlib only, Python 3.6 syntax. The decoder lets only UserDataError escape.
"""

import base64
import binascii
import configparser
import copy
import email.errors
import email.parser
import gzip
import hashlib
import io
import json
import re
import shlex
import zlib
from urllib.parse import urlsplit

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
CONTENT_TYPE = "application/vnd.gwms.glidein+json"

# Decoder bounds: a cloud never delivers more than 256 KiB, so anything far larger is hostile.
MAX_RAW_BYTES = 1024 * 1024
MAX_DECOMPRESSED_BYTES = 4 * 1024 * 1024

MEASURE_RAW = "raw"
MEASURE_BASE64 = "base64"
# provider -> (limit in bytes, what the limit is measured on)
PROVIDER_LIMITS = {
    "ec2": (16384, MEASURE_RAW),
    "openstack": (65535, MEASURE_BASE64),
    "gce": (262144, MEASURE_RAW),
    "azure": (65535, MEASURE_RAW),
}
_MEASURE_TEXT = {
    MEASURE_RAW: "the raw (gzip) bytes",
    MEASURE_BASE64: "the base64 of the raw bytes",
}

# Legacy glideinWMS form: glideinwms_metadata=<b64 ini>####<args>####[<idtoken>####]
# glidein_credentials=<b64 gzip proxy> (HTCondor appends ec2_user_data_file to ec2_user_data).
LEGACY_METADATA_PREFIX = "glideinwms_metadata="
LEGACY_CREDENTIALS_PREFIX = "glidein_credentials="
LEGACY_DELIMITER = "####"
LEGACY_DEFAULT_MAX_LIFETIME = 43200  # the glideinWMS factory default when VM_MAX_LIFETIME is unset

_GZIP_MAGIC = b"\x1f\x8b"
_DIGITS_RE = re.compile(r"\A[0-9]{1,12}\Z")
_SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
_IDENTIFIER_RE = re.compile(r"\A[\x21-\x7e]{1,255}\Z")
_MIME_TYPE_RE = re.compile(r"\A[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*\Z")
_CLEAN_TEXT_RE = re.compile(rb"\A[\t\n\x20-\x7e]*\Z")
_PLAIN_FIELD_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")
_PEM_CERT_MARK = "-----BEGIN CERTIFICATE-----"
_REQUIRED = object()
_CHUNK = 64 * 1024


class UserDataError(ValueError):
    """UserData that cannot be used; str() is one line saying what is wrong and where."""


class UserDataTooLarge(UserDataError):
    """Encoded UserData over a provider's limit: raised before any cloud call is made."""

    def __init__(self, provider, limit, size, measure=MEASURE_RAW):
        self.provider = provider
        self.limit = limit
        self.size = size
        self.measure = measure
        where = "the %s limit" % provider if provider else "the limit"
        super(UserDataTooLarge, self).__init__(
            "user data is %s bytes measured on %s, over %s of %s bytes; use fewer or smaller "
            "overlays, a shorter proxy chain or fewer pilot arguments"
            % (format(size, ","), _MEASURE_TEXT[measure], where, format(limit, ","))
        )


# --------------------------------------------------------------------------- validation


def _fail(path, reason):
    raise UserDataError("%s: %s" % (path, reason))


def _mapping(value, path):
    if not isinstance(value, dict):
        _fail(path, "expected a mapping (JSON object), found %s" % _kind(value))
    return value


_KINDS = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number with a fraction"),
    (str, "a string"),
    ((list, tuple), "a list"),
    (dict, "a mapping"),
)


def _kind(value):
    """What a value is, in words, without showing it (it may be a secret)."""
    if value is None:
        return "null"
    for types, words in _KINDS:
        if isinstance(value, types):
            return words
    return "a %s" % type(value).__name__


def _string(value, path):
    if not isinstance(value, str):
        _fail(path, "expected a string, found %s" % _kind(value))
    if not value:
        _fail(path, "must not be empty")
    if "\x00" in value:
        _fail(path, "must not contain NUL characters")
    return value


def _identifier(value, path):
    _string(value, path)
    if not _IDENTIFIER_RE.match(value) or "/" in value or ".." in value:
        _fail(path, "expected 1-255 printable ASCII characters without spaces, '/' or '..'")
    return value


def _plain_name(value, path):
    _string(value, path)
    if "/" in value or "\\" in value or ".." in value or value == ".":
        _fail(path, "expected a plain file name (no '/', no '..')")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        _fail(path, "must not contain control characters")
    return value


def _url(value, path):
    _string(value, path)
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in value):
        _fail(path, "URL must not contain spaces or control characters")
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        _fail(path, "expected an http:// or https:// URL with a host")
    return value


def _integer(value, path, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, "expected an integer, found %s" % _kind(value))
    if value < minimum:
        _fail(path, "must be at least %d" % minimum)
    return value


def _boolean(value, path):
    if not isinstance(value, bool):
        _fail(path, "expected true or false, found %s" % _kind(value))
    return value


def _sha256(value, path):
    if not isinstance(value, str):
        _fail(
            path,
            "expected 64 lowercase hex characters as a string (quote it), found %s" % _kind(value),
        )
    if not _SHA256_RE.match(value):
        _fail(path, "expected 64 lowercase hex characters")
    return value


def _list(value, path):
    if not isinstance(value, (list, tuple)):
        _fail(path, "expected a list, found %s" % _kind(value))
    return value


def _fields(value, path, spec):
    """Check a mapping against ((name, checker, default), ...): unknown keys are errors."""
    _mapping(value, path)
    known = {name for name, _check, _default in spec}
    for key in sorted(value, key=str):
        if key not in known:
            _fail(_join(path, key), "unknown field; remove it or check its spelling")
    result = {}
    for name, check, default in spec:
        field_path = _join(path, name)
        if name not in value:
            if default is _REQUIRED:
                _fail(field_path, "required field is missing; add it")
            result[name] = copy.deepcopy(default)
        else:
            result[name] = check(value[name], field_path)
    return result


def _join(path, name):
    name = _field_name(name)
    return "%s.%s" % (path, name) if path else name


def _field_name(name):
    """A field name fit for a one-line message: odd or long names are quoted and cut short."""
    if isinstance(name, str) and _PLAIN_FIELD_RE.match(name):
        return name
    return repr(name)[:60]


def _check_version(value, path):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, "expected an integer format version, found %s" % _kind(value))
    if value not in SUPPORTED_VERSIONS:
        _fail(
            path,
            "found version %d, this decoder supports version %s; update the image or the factory"
            % (value, ", ".join(str(v) for v in SUPPORTED_VERSIONS)),
        )
    return value


def _check_issued_at(value, path):
    return _integer(value, path, 0)


def _check_files(value, path):
    _mapping(value, path)
    result = {}
    for name in sorted(value, key=str):
        item_path = "%s[%s]" % (path, _field_name(name))
        _plain_name(name, item_path)
        result[name] = _sha256(value[name], item_path)
    return result


def _check_args(value, path):
    _list(value, path)
    result = []
    for index, arg in enumerate(value):
        item_path = "%s[%d]" % (path, index)
        if not isinstance(arg, str):
            _fail(item_path, "expected a string, found %s" % _kind(arg))
        if "\x00" in arg:
            _fail(item_path, "must not contain NUL characters")
        result.append(arg)
    return result


def _check_lifetimes(value, path):
    result = _fields(
        value,
        path,
        (
            ("max_seconds", lambda v, p: _integer(v, p, 1), _REQUIRED),
            ("retire_seconds", lambda v, p: _integer(v, p, 1), _REQUIRED),
        ),
    )
    if result["retire_seconds"] > result["max_seconds"]:
        _fail(_join(path, "retire_seconds"), "must not exceed max_seconds")
    return result


def _check_log_upload(value, path):
    return _fields(value, path, (("url", _url, _REQUIRED), ("token", _string, _REQUIRED)))


_OVERLAY_SPEC = (
    ("name", _plain_name, _REQUIRED),
    ("url", _url, _REQUIRED),
    ("sha256", _sha256, _REQUIRED),
    ("privileged", _boolean, False),
)


def _check_overlays(value, path):
    _list(value, path)
    result = []
    seen = set()
    for index, overlay in enumerate(value):
        item_path = "%s[%d]" % (path, index)
        checked = _fields(overlay, item_path, _OVERLAY_SPEC)
        if checked["name"] in seen:
            _fail(_join(item_path, "name"), "duplicate overlay name; give each overlay its own")
        seen.add(checked["name"])
        result.append(checked)
    return result


def _check_proxy(value, path):
    _string(value, path)
    if _PEM_CERT_MARK not in value:
        _fail(path, "expected a PEM proxy chain (no '%s' line found)" % _PEM_CERT_MARK)
    return value


def _check_idtoken(value, path):
    if value is None:
        return None
    return _string(value, path)


def _check_credentials(value, path):
    return _fields(
        value, path, (("x509_proxy", _check_proxy, _REQUIRED), ("idtoken", _check_idtoken, None))
    )


_DOCUMENT_SPEC = (
    ("version", _check_version, _REQUIRED),
    ("factory", _identifier, _REQUIRED),
    ("entry", _identifier, _REQUIRED),
    ("client", _identifier, _REQUIRED),
    ("glidein_id", _identifier, _REQUIRED),
    ("issued_at", _check_issued_at, _REQUIRED),
    ("web_base", _url, _REQUIRED),
    ("files", _check_files, _REQUIRED),
    ("pilot_args", _check_args, []),
    ("lifetimes", _check_lifetimes, _REQUIRED),
    ("log_upload", _check_log_upload, _REQUIRED),
    ("overlays", _check_overlays, []),
    ("allow_privileged_overlays", _boolean, False),
    ("disable_shutdown", _boolean, False),
    ("credentials", _check_credentials, _REQUIRED),
)


def validate(document):
    # type: (dict) -> dict
    """Check a UserData v1 document; return a normalised copy with the defaults filled in.

    The version is checked first so a newer factory's document fails on its version, not on
    some field this image does not know.
    """
    if not isinstance(document, dict):
        _fail("document", "expected a mapping (JSON object), found %s" % _kind(document))
    if "version" in document:
        _check_version(document["version"], "version")
    return _fields(document, "", _DOCUMENT_SPEC)


# --------------------------------------------------------------------------- size limits


def measured_size(raw, measure):
    # type: (bytes, str) -> int
    """Size of `raw` as a provider measures it (base64 for OpenStack Nova)."""
    if measure == MEASURE_BASE64:
        return 4 * ((len(raw) + 2) // 3)
    return len(raw)


def _resolve_limit(limit):
    """Return (provider or None, limit bytes, measure) for a provider name or a byte count."""
    if isinstance(limit, bool):
        raise UserDataError("limit: expected a provider name or a number of bytes")
    if isinstance(limit, int):
        if limit <= 0:
            raise UserDataError("limit: must be a positive number of bytes, found %d" % limit)
        return None, limit, MEASURE_RAW
    if isinstance(limit, str) and limit.lower() in PROVIDER_LIMITS:
        name = limit.lower()
        size, measure = PROVIDER_LIMITS[name]
        return name, size, measure
    raise UserDataError(
        "limit: unknown provider %r; use one of %s or a number of bytes"
        % (limit, ", ".join(sorted(PROVIDER_LIMITS)))
    )


def check_size(raw, limit):
    # type: (bytes, object) -> object
    """Raise UserDataTooLarge when `raw` is over `limit` (provider name or raw bytes).

    Returns the headroom in bytes (in the provider's measure), or None when `limit` is None.
    """
    if limit is None:
        return None
    provider, limit_bytes, measure = _resolve_limit(limit)
    size = measured_size(raw, measure)
    if size > limit_bytes:
        raise UserDataTooLarge(provider, limit_bytes, size, measure)
    return limit_bytes - size


# --------------------------------------------------------------------------- encoding


def _normalise_part(index, part):
    path = "extra_parts[%d]" % index
    if not isinstance(part, (tuple, list)) or len(part) != 2:
        _fail(path, "expected a (content_type, content) pair")
    content_type, content = part
    if not isinstance(content_type, str) or not _MIME_TYPE_RE.match(content_type.lower()):
        _fail(path, "expected a MIME content type such as text/cloud-config")
    content_type = content_type.lower()
    if content_type == CONTENT_TYPE or content_type.startswith("multipart/"):
        _fail(path, "content type %s is reserved for the glidein document" % content_type)
    if isinstance(content, str):
        content = content.encode("utf-8")
    if not isinstance(content, (bytes, bytearray)):
        _fail(path, "expected bytes or text content, found %s" % _kind(content))
    return content_type, bytes(content)


def _mime_part(content_type, body):
    """Plain text goes as 7bit (compresses best); anything else as base64 so it round-trips."""
    if _CLEAN_TEXT_RE.match(body):
        headers = "Content-Type: %s\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n"
        return (headers % content_type).encode("ascii") + b"\n" + body
    encoded = base64.encodebytes(body)
    headers = "Content-Type: %s\nMIME-Version: 1.0\nContent-Transfer-Encoding: base64\n"
    return (headers % content_type).encode("ascii") + b"\n" + encoded.rstrip(b"\n")


def build_mime(glidein_json, extra_parts):
    # type: (bytes, list) -> bytes
    """The uncompressed multipart/mixed document; the boundary is a content hash (deterministic)."""
    parts = [_mime_part(CONTENT_TYPE, glidein_json)]
    parts.extend(_mime_part(ctype, body) for ctype, body in extra_parts)
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    boundary = "gwms-" + digest.hexdigest()[:40]
    marker = boundary.encode("ascii")
    if any(marker in part for part in parts):  # pragma: no cover - needs a sha256 collision
        raise UserDataError("extra_parts: content contains the MIME boundary; change it")
    out = [
        ('Content-Type: multipart/mixed; boundary="%s"\nMIME-Version: 1.0\n\n' % boundary).encode(
            "ascii"
        )
    ]
    for part in parts:
        out.append(b"--" + marker + b"\n" + part + b"\n")
    out.append(b"--" + marker + b"--\n")
    return b"".join(out)


def _gzip(data):
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buffer.getvalue()


def document_json(document):
    # type: (dict) -> bytes
    """Canonical JSON of a validated document: sorted keys, compact, ASCII."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def encode(document, extra_parts=(), limit=None):
    # type: (dict, object, object) -> bytes
    """Validate, build the MIME document, gzip it (deterministic) and check the provider limit."""
    normalised = validate(document)
    parts = [_normalise_part(index, part) for index, part in enumerate(extra_parts)]
    raw = _gzip(build_mime(document_json(normalised), parts))
    check_size(raw, limit)
    return raw


# --------------------------------------------------------------------------- decoding


def _field(*keys):
    """A read-only property for document[keys[0]][keys[1]]...; None where a level is missing."""

    def getter(self):
        value = self.document
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return property(getter, doc="document field %s" % ".".join(keys))


class GlideinUserData(object):
    """A decoded, validated UserData document; repr() never shows a secret."""

    def __init__(self, document, extra_parts=(), legacy=False, legacy_ini=None):
        self.document = document
        self.extra_parts = list(extra_parts)
        self.legacy = legacy
        self.legacy_ini = legacy_ini or {}

    version = _field("version")
    factory = _field("factory")
    entry = _field("entry")
    client = _field("client")
    glidein_id = _field("glidein_id")
    issued_at = _field("issued_at")
    web_base = _field("web_base")
    files = _field("files")
    pilot_args = _field("pilot_args")
    max_seconds = _field("lifetimes", "max_seconds")
    retire_seconds = _field("lifetimes", "retire_seconds")
    log_upload_url = _field("log_upload", "url")
    log_upload_token = _field("log_upload", "token")
    overlays = _field("overlays")
    allow_privileged_overlays = _field("allow_privileged_overlays")
    disable_shutdown = _field("disable_shutdown")
    x509_proxy = _field("credentials", "x509_proxy")
    idtoken = _field("credentials", "idtoken")

    def redacted(self):
        # type: () -> dict
        """A copy of the document safe to log: every secret becomes '<redacted: N bytes>'."""
        result = copy.deepcopy(self.document)
        credentials = result.get("credentials") or {}
        for key in list(credentials):
            credentials[key] = _redact(credentials[key])
        log_upload = result.get("log_upload")
        if isinstance(log_upload, dict) and "token" in log_upload:
            log_upload["token"] = _redact(log_upload["token"])
        return result

    def __repr__(self):
        return (
            "GlideinUserData(glidein_id=%r, factory=%r, entry=%r, client=%r, legacy=%r, "
            "extra_parts=%d)"
            % (
                self.glidein_id,
                self.factory,
                self.entry,
                self.client,
                self.legacy,
                len(self.extra_parts),
            )
        )

    __str__ = __repr__


def _redact(value):
    if value is None:
        return None
    size = len(value.encode("utf-8")) if isinstance(value, str) else len(value)
    return "<redacted: %d bytes>" % size


def gunzip_bounded(data, limit=MAX_DECOMPRESSED_BYTES, what="user data"):
    # type: (bytes, int, str) -> bytes
    """Decompress one gzip member, refusing more than `limit` bytes of output while streaming."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pieces = []
    total = 0
    pending = data
    try:
        while True:
            piece = inflater.decompress(pending, _CHUNK)
            total += len(piece)
            if total > limit:
                raise UserDataError(
                    "%s: decompresses to more than %s bytes (decompression bomb?); refusing it"
                    % (what, format(limit, ","))
                )
            pieces.append(piece)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and not piece):
                break
    except zlib.error as exc:
        raise UserDataError("%s: corrupt gzip data (%s)" % (what, exc)) from None
    if not inflater.eof:
        raise UserDataError("%s: gzip data is truncated" % what)
    if inflater.unused_data:
        raise UserDataError("%s: unexpected data after the gzip stream" % what)
    return b"".join(pieces)


def _as_bytes(data):
    if isinstance(data, str):
        return data.encode("utf-8", "surrogateescape")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise UserDataError("user data: expected bytes, found %s" % _kind(data))


def decode(data):
    # type: (bytes) -> GlideinUserData
    """Decode UserData (gzip MIME v1, or the legacy glideinWMS form). Only UserDataError escapes."""
    try:
        return _decode(data)
    except UserDataError:
        raise
    except RecursionError:
        raise UserDataError("user data: structure nested too deeply") from None
    except Exception as exc:  # the VM must get one clear line, never a traceback
        raise UserDataError(
            "user data could not be decoded (%s); check the factory that produced it"
            % type(exc).__name__
        ) from None


def _decode(data):
    raw = _as_bytes(data)
    if len(raw) > MAX_RAW_BYTES:
        raise UserDataError(
            "user data: %s bytes is over the %s-byte maximum; refusing it"
            % (format(len(raw), ","), format(MAX_RAW_BYTES, ","))
        )
    if not raw.strip():
        raise UserDataError("user data: empty")
    if raw.startswith(_GZIP_MAGIC):
        return _decode_mime(gunzip_bounded(raw))
    if _looks_legacy(raw):
        return _decode_legacy(raw)
    raise UserDataError(
        "user data: neither gzip (UserData v1) nor the legacy glideinWMS form; "
        "check what the factory put in the instance's user data"
    )


_BAD_MIME_DEFECTS = (
    email.errors.NoBoundaryInMultipartDefect,
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.CloseBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
    email.errors.MissingHeaderBodySeparatorDefect,
)
_KNOWN_CTE = ("7bit", "8bit", "binary", "base64", "quoted-printable")


def _decode_mime(text):
    message = email.parser.BytesParser().parsebytes(text)
    if message.get_content_type() != "multipart/mixed" or not message.is_multipart():
        raise UserDataError("user data: not a MIME multipart/mixed document")
    _refuse_defects(message, "user data")
    glidein_parts = []
    extra_parts = []
    for index, part in enumerate(message.get_payload()):
        ctype, body = _part_payload(part, index)
        if ctype == CONTENT_TYPE:
            glidein_parts.append(body)
        else:
            extra_parts.append((ctype, body))
    if not glidein_parts:
        raise UserDataError(
            "user data: no %s part; it was not made by a gwms factory" % CONTENT_TYPE
        )
    if len(glidein_parts) > 1:
        raise UserDataError(
            "user data: %d %s parts, expected one" % (len(glidein_parts), CONTENT_TYPE)
        )
    document = validate(_parse_json(glidein_parts[0]))
    return GlideinUserData(document, extra_parts, legacy=False)


def _refuse_defects(message, where):
    for defect in message.defects:
        if isinstance(defect, _BAD_MIME_DEFECTS):
            raise UserDataError("%s: malformed MIME (%s)" % (where, type(defect).__name__))


def _part_payload(part, index):
    where = "user data part %d" % (index + 1)
    if part.is_multipart():
        raise UserDataError("%s: nested multipart parts are not supported" % where)
    _refuse_defects(part, where)
    cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte not in _KNOWN_CTE:
        raise UserDataError("%s: unknown Content-Transfer-Encoding %r" % (where, cte[:40]))
    body = part.get_payload(decode=True)
    if not isinstance(body, bytes):
        raise UserDataError("%s: no readable content" % where)
    return part.get_content_type(), body


def _first_line(exc):
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _reject_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise UserDataError("glidein document: field %r appears twice" % key[:60])
        result[key] = value
    return result


def _reject_constant(name):
    raise UserDataError("glidein document: %s is not valid JSON" % name)


def _parse_json(body):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UserDataError("glidein document: not UTF-8 text") from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except ValueError as exc:
        if isinstance(exc, UserDataError):
            raise
        raise UserDataError("glidein document: invalid JSON (%s)" % _first_line(exc)) from None


# --------------------------------------------------------------------------- legacy form


def _looks_legacy(raw):
    head = raw.lstrip()
    return head.startswith(LEGACY_METADATA_PREFIX.encode("ascii")) or (
        LEGACY_DELIMITER.encode("ascii") in raw
    )


def _legacy_tokens(raw):
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UserDataError("legacy user data: not ASCII text") from None
    if text.startswith(LEGACY_METADATA_PREFIX):
        text = text[len(LEGACY_METADATA_PREFIX) :]
    tokens = text.split(LEGACY_DELIMITER)
    if len(tokens) not in (3, 4):
        raise UserDataError(
            "legacy user data: expected '<ini>####<args>####[<idtoken>####]<credentials>', "
            "found %d '####'-separated fields" % len(tokens)
        )
    credentials = tokens[-1].strip()
    if credentials.startswith(LEGACY_CREDENTIALS_PREFIX):
        credentials = credentials[len(LEGACY_CREDENTIALS_PREFIX) :]
    idtoken = tokens[2].strip() if len(tokens) == 4 else ""
    return tokens[0].strip(), tokens[1], idtoken or None, credentials.strip()


def _b64(text, what):
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UserDataError("legacy user data: %s is not valid base64" % what) from None


def _legacy_ini(encoded):
    try:
        ini_text = _b64(encoded, "glideinwms_metadata").decode("utf-8")
    except UnicodeDecodeError:
        raise UserDataError("legacy user data: glideinwms_metadata is not UTF-8 text") from None
    parser = configparser.RawConfigParser(strict=True)
    try:
        parser.read_string(ini_text, source="glideinwms_metadata")
    except configparser.Error as exc:
        reason = _first_line(exc)
        raise UserDataError("legacy user data: glideinwms_metadata ini: %s" % reason) from None
    for option in ("args", "webbase"):
        if not parser.has_option("glidein_startup", option):
            raise UserDataError(
                "legacy user data: glideinwms_metadata ini has no [glidein_startup] %s" % option
            )
    return {section: dict(parser.items(section)) for section in parser.sections()}


def _shell_words(text, what):
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UserDataError("legacy user data: %s: %s" % (what, exc)) from None


def _smart_bool(text):
    """The old VM code's rule: anything but false/f/n/0/empty is true."""
    return str(text).strip().lower() not in ("false", "f", "n", "0", "")


def _arg_value(args, flag):
    for index, arg in enumerate(args[:-1]):
        if arg == flag:
            return args[index + 1]
    return None


def _decode_legacy(raw):
    ini_b64, extra_args, idtoken, credentials_b64 = _legacy_tokens(raw)
    ini = _legacy_ini(ini_b64)
    startup = ini["glidein_startup"]
    vm = ini.get("vm_properties", {})
    args = _shell_words(startup["args"], "[glidein_startup] args")
    args += _shell_words(extra_args.replace("\\", ""), "extra arguments")
    proxy_gz = _b64(credentials_b64, "glidein_credentials")
    if not proxy_gz.startswith(_GZIP_MAGIC):
        raise UserDataError("legacy user data: glidein_credentials is not gzip data")
    try:
        proxy = gunzip_bounded(proxy_gz, what="legacy glidein_credentials").decode("ascii")
    except UnicodeDecodeError:
        raise UserDataError("legacy user data: the proxy is not ASCII PEM text") from None
    _check_proxy(proxy, "legacy user data: glidein_credentials")
    max_lifetime = vm.get("max_lifetime", str(LEGACY_DEFAULT_MAX_LIFETIME)).strip()
    if not _DIGITS_RE.match(max_lifetime) or int(max_lifetime) < 1:
        raise UserDataError(
            "legacy user data: [vm_properties] max_lifetime must be a positive integer"
        )
    cluster, process = _arg_value(args, "-cluster"), _arg_value(args, "-subcluster")
    document = {
        "version": FORMAT_VERSION,
        "factory": _arg_value(args, "-factory"),
        "entry": _arg_value(args, "-entry"),
        "client": _arg_value(args, "-clientname"),
        "glidein_id": "%s.%s" % (cluster, process) if cluster and process else None,
        "issued_at": None,
        "web_base": _url(startup["webbase"].strip(), "legacy user data: [glidein_startup] webbase"),
        "files": {},
        "pilot_args": args,
        "lifetimes": {"max_seconds": int(max_lifetime), "retire_seconds": int(max_lifetime)},
        "log_upload": None,
        "overlays": [],
        "allow_privileged_overlays": False,
        "disable_shutdown": _smart_bool(vm.get("disable_shutdown", "False")),
        "credentials": {"x509_proxy": proxy, "idtoken": idtoken},
    }
    return GlideinUserData(document, [], legacy=True, legacy_ini=ini)
