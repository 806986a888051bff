"""`gwms userdata`: build a glidein's UserData from a YAML spec, and read one back for inspection.

Thin layer over the one codec, `gwms_context.userdata`: this module only reads files, turns
codec errors into one-line `GwmsError`s and writes the result 0600 (it holds a proxy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from gwms.errors import ConfigError, CredentialError, GwmsError
from gwms_context import userdata

EXIT_NO_USER_DATA = 3
CLOUD_CONFIG_TYPE = "text/cloud-config"


class UserDataFileError(GwmsError):
    """A UserData file cannot be read or decoded, or its encoding is over a provider's limit."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `gwms userdata encode|decode`."""
    group = subparsers.add_parser(
        "userdata",
        help="encode or decode glidein UserData (v1 and legacy glideinWMS)",
        description="Encode a glidein's UserData v1 from a YAML spec, or decode UserData "
        "(v1 or the legacy glideinWMS form) to check what a VM will see.",
    )
    actions = group.add_subparsers(dest="userdata_action", metavar="ACTION", required=True)

    encode = actions.add_parser(
        "encode",
        help="build UserData from a YAML spec",
        description="Build gzip MIME UserData v1 from SPEC (the document fields; `version` "
        "defaults to 1 and `issued_at` to now). OUT holds secrets and is written 0600.",
    )
    encode.add_argument("--spec", required=True, type=Path, help="YAML file with the fields")
    encode.add_argument("--proxy", type=Path, help="PEM proxy chain for credentials.x509_proxy")
    encode.add_argument(
        "--cloud-config",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="add FILE as a text/cloud-config part (repeatable)",
    )
    encode.add_argument(
        "--limit",
        metavar="PROVIDER|BYTES",
        help="fail when over this limit: ec2, openstack, gce, azure or a number of raw bytes",
    )
    encode.add_argument("-o", "--output", required=True, type=Path, metavar="OUT")
    encode.set_defaults(handler=encode_command)

    decode = actions.add_parser(
        "decode",
        help="print the document inside UserData",
        description="Decode UserData FILE and print it as JSON, secrets redacted. Exit 2 when "
        "it is invalid, 3 when FILE is empty (no user data).",
    )
    decode.add_argument("file", type=Path, metavar="FILE")
    decode.add_argument(
        "--show-secrets", action="store_true", help="print the proxy and tokens in clear"
    )
    decode.set_defaults(handler=decode_command)


# ---------------------------------------------------------------------------- encode


def encode_command(args: argparse.Namespace) -> int:
    """Read the spec and parts, encode, check the limit, then (only then) write OUT."""
    limit = parse_limit(args.limit)
    spec = load_spec(args.spec)
    if args.proxy is not None:
        credentials = spec.setdefault("credentials", {})
        if isinstance(credentials, dict):
            credentials["x509_proxy"] = read_proxy(args.proxy)
    parts = [(CLOUD_CONFIG_TYPE, read_cloud_config(path)) for path in args.cloud_config]
    try:
        raw = userdata.encode(spec, parts, limit=limit)
    except userdata.UserDataTooLarge as exc:
        raise UserDataFileError(f"{args.spec}: {exc}") from None
    except userdata.UserDataError as exc:
        raise ConfigError(f"{args.spec}: {exc}") from None
    write_secret_file(args.output, raw)
    print(
        f"wrote {args.output}: {len(raw):,} bytes (gzip MIME, UserData v{userdata.FORMAT_VERSION})"
    )
    for line in headroom_lines(raw, limit):
        print(f"  {line}")
    return 0


def parse_limit(text: str | None) -> str | int | None:
    """`ec2` / `openstack` / `gce` / `azure` or a positive number of raw bytes."""
    if text is None:
        return None
    if text.lower() in userdata.PROVIDER_LIMITS:
        return text.lower()
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        names = ", ".join(sorted(userdata.PROVIDER_LIMITS))
        raise ConfigError(f"--limit {text!r}: expected one of {names} or a positive byte count")
    return value


def load_spec(path: Path) -> dict[str, Any]:
    """The spec as a dict with `version` and `issued_at` defaulted; YAML errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the UserData spec ({_reason(exc)})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_yaml_where(path, exc)}: invalid YAML; fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of UserData fields at the top level")
    data.setdefault("version", userdata.FORMAT_VERSION)
    data.setdefault("issued_at", int(time.time()))
    return data


def _yaml_where(path: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = f"{path} line {mark.line + 1}" if mark is not None else str(path)
    return f"{where} ({problem})" if problem else where


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or type(exc).__name__


def read_proxy(path: Path) -> str:
    """The PEM text of a proxy file; refuses files that are not a PEM certificate chain."""
    try:
        text = path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"{path}: cannot read the proxy ({_reason(exc)})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise CredentialError(f"{path}: not a PEM proxy chain (no certificate); pass a proxy file")
    return text


def read_cloud_config(path: Path) -> bytes:
    """A VO's cloud-config part; must be a YAML mapping so cloud-init will not drop it."""
    try:
        content = path.read_bytes()
        document = yaml.safe_load(content.decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the cloud-config ({_reason(exc)})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_yaml_where(path, exc)}: invalid cloud-config YAML") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a cloud-config must be a YAML mapping (e.g. runcmd: [...])")
    return content


def write_secret_file(path: Path, data: bytes) -> None:
    """Write atomically through a temp file created 0600 (never chmod-ed after writing)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UserDataFileError(f"{path}: cannot write ({_reason(exc)})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise UserDataFileError(f"{path}: cannot write ({_reason(exc)})") from None


def headroom_lines(raw: bytes, limit: str | int | None) -> list[str]:
    """One line per limit: the chosen one, or every provider's when none was chosen."""
    limits: list[str | int] = [limit] if limit is not None else sorted(userdata.PROVIDER_LIMITS)
    lines = []
    for each in limits:
        if isinstance(each, int):
            name, size, measure = f"{each:,}-byte", each, userdata.MEASURE_RAW
        else:
            size, measure = userdata.PROVIDER_LIMITS[each]
            name = each
        used = userdata.measured_size(raw, measure)
        state = f"{size - used:,} bytes headroom" if used <= size else f"OVER by {used - size:,}"
        lines.append(f"{name} limit {size:,} bytes ({measure}: {used:,}): {state}")
    return lines


# ---------------------------------------------------------------------------- decode


def decode_command(args: argparse.Namespace) -> int:
    """Print {legacy, document, extra_parts} as JSON; secrets redacted unless asked."""
    path: Path = args.file
    try:
        with path.open("rb") as handle:
            raw = handle.read(userdata.MAX_RAW_BYTES + 1)
    except OSError as exc:
        raise UserDataFileError(f"{path}: cannot read ({_reason(exc)})") from None
    if not raw.strip():
        print(f"gwms: {path}: empty, there is no user data", file=sys.stderr)
        return EXIT_NO_USER_DATA
    try:
        decoded = userdata.decode(raw)
    except userdata.UserDataError as exc:
        raise UserDataFileError(f"{path}: {exc}") from None
    report = {
        "legacy": decoded.legacy,
        "document": decoded.document if args.show_secrets else decoded.redacted(),
        "extra_parts": [
            {"content_type": content_type, "bytes": len(body)}
            for content_type, body in decoded.extra_parts
        ],
    }
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0
