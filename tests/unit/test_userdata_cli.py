"""`gwms userdata encode|decode`: file round trip, redaction, exit codes, one-line errors."""

from __future__ import annotations

import hashlib
import json
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gwms.cli import main
from gwms_context import userdata

PROXY = (
    "-----BEGIN CERTIFICATE-----\nMIIBproxyCert\n-----END CERTIFICATE-----\n"
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEproxyKeySecret\n-----END RSA PRIVATE KEY-----\n"
    "-----BEGIN CERTIFICATE-----\nMIIBuserCert\n-----END CERTIFICATE-----\n"
)
TOKEN = "log-upload-token-s3cr3t"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def spec_fields() -> dict[str, Any]:
    """What an operator writes: no version, no issued_at, no proxy (it comes from --proxy)."""
    return {
        "factory": "gfactory-local",
        "entry": "ec2_us_east_1",
        "client": "vo1-frontend.main",
        "glidein_id": "gl-20261122-000001-ab12cd",
        "web_base": "http://127.0.0.1:8319/web",
        "files": {"glidein_startup.sh": _sha("startup")},
        "pilot_args": ["-collector", "127.0.0.1:9618"],
        "lifetimes": {"max_seconds": 86400, "retire_seconds": 72000},
        "log_upload": {"url": "http://127.0.0.1:8319/logs/x", "token": TOKEN},
        "overlays": [{"name": "vo-setup", "url": "http://127.0.0.1/vo.tgz", "sha256": _sha("vo")}],
    }


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_fields()))
    proxy = tmp_path / "proxy.pem"
    proxy.write_text(PROXY)
    cloud_config = tmp_path / "vo.cfg"
    cloud_config.write_text("#cloud-config\nruncmd:\n  - [touch, /run/vo]\n")
    return {"spec": spec, "proxy": proxy, "cloud_config": cloud_config, "out": tmp_path / "ud.gz"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["userdata", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def encode_args(files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "encode",
        "--spec", str(files["spec"]),
        "--proxy", str(files["proxy"]),
        "--cloud-config", str(files["cloud_config"]),
        "-o", str(files["out"]),
        *extra,
    ]  # fmt: skip


def test_encode_then_decode_round_trips_through_files(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = int(time.time())
    code, out, err = run(capsys, *encode_args(files, "--limit", "ec2"))
    assert (code, err) == (0, "")
    size = files["out"].stat().st_size
    assert f"{size:,} bytes" in out
    assert f"ec2 limit 16,384 bytes (raw: {size:,}): {16384 - size:,} bytes headroom" in out

    decoded = userdata.decode(files["out"].read_bytes())
    assert decoded.version == 1
    assert before <= decoded.issued_at <= int(time.time())
    assert decoded.x509_proxy == PROXY
    assert decoded.extra_parts == [("text/cloud-config", files["cloud_config"].read_bytes())]

    code, out, err = run(capsys, "decode", str(files["out"]), "--show-secrets")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["legacy"] is False
    assert report["document"] == decoded.document
    assert report["extra_parts"] == [
        {"content_type": "text/cloud-config", "bytes": files["cloud_config"].stat().st_size}
    ]


def test_encoded_file_is_created_owner_read_write_only(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *encode_args(files))[0] == 0
    assert stat.S_IMODE(files["out"].stat().st_mode) == 0o600
    assert not [p for p in files["out"].parent.iterdir() if p.name.endswith(".tmp")]


def test_encode_without_a_limit_reports_headroom_for_every_provider(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *encode_args(files))
    assert code == 0
    for provider in ("azure", "ec2", "gce", "openstack"):
        assert f"{provider} limit" in out
    assert "openstack limit 65,535 bytes (base64:" in out


def test_decode_redacts_secrets_by_default(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, *encode_args(files))
    code, out, _ = run(capsys, "decode", str(files["out"]))
    assert code == 0
    assert "BEGIN" not in out
    assert "proxyKeySecret" not in out
    assert TOKEN not in out
    document = json.loads(out)["document"]
    assert document["credentials"]["x509_proxy"] == f"<redacted: {len(PROXY)} bytes>"
    assert document["log_upload"]["token"] == f"<redacted: {len(TOKEN)} bytes>"
    assert document["glidein_id"] == "gl-20261122-000001-ab12cd"


def _assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2
    assert out == ""
    assert err.startswith("gwms: ")
    assert err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err
    assert "Traceback" not in err
    assert TOKEN not in err


def test_bad_yaml_in_the_spec_is_one_line_naming_the_line(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files["spec"].write_text("factory: gf\nentry: [unclosed\nclient: c\n")
    code, out, err = run(capsys, *encode_args(files))
    _assert_one_line_error(code, out, err, str(files["spec"]), "line 3", "invalid YAML")
    assert not files["out"].exists()


def test_schema_violation_in_the_spec_is_one_line_naming_the_field(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_fields()
    spec["overlays"][0]["sha256"] = "ABC"
    files["spec"].write_text(yaml.safe_dump(spec))
    code, out, err = run(capsys, *encode_args(files))
    _assert_one_line_error(
        code, out, err, str(files["spec"]), "overlays[0].sha256: expected 64 lowercase hex"
    )


def test_over_the_ec2_limit_fails_before_writing_anything(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = spec_fields()
    spec["overlays"] = [
        {"name": f"o{i}-{_sha(str(i))}", "url": f"http://127.0.0.1/{_sha('u' + str(i))}.tgz",
         "sha256": _sha(f"o{i}")}
        for i in range(150)
    ]  # fmt: skip
    files["spec"].write_text(yaml.safe_dump(spec))
    code, out, err = run(capsys, *encode_args(files, "--limit", "ec2"))
    _assert_one_line_error(code, out, err, "over the ec2 limit of 16,384 bytes", "fewer or smaller")
    assert {p.name for p in files["out"].parent.iterdir()} == {"spec.yaml", "proxy.pem", "vo.cfg"}


def test_a_byte_count_limit_is_accepted_and_an_unknown_one_is_an_error(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, *encode_args(files, "--limit", "100000"))
    assert code == 0
    assert "100,000-byte limit" in out
    code, out, err = run(capsys, *encode_args(files, "--limit", "aws"))
    _assert_one_line_error(code, out, err, "--limit 'aws'", "ec2")


def test_a_proxy_file_that_is_not_pem_is_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files["proxy"].write_bytes(b"\x30\x82\x01\x0a binary DER")
    code, out, err = run(capsys, *encode_args(files))
    _assert_one_line_error(code, out, err, str(files["proxy"]))
    assert not files["out"].exists()


def test_a_cloud_config_that_is_not_a_yaml_mapping_is_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files["cloud_config"].write_text("just a sentence\n")
    code, out, err = run(capsys, *encode_args(files))
    _assert_one_line_error(code, out, err, str(files["cloud_config"]), "YAML mapping")


def test_a_missing_spec_file_is_one_line(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files["spec"].unlink()
    code, out, err = run(capsys, *encode_args(files))
    _assert_one_line_error(code, out, err, str(files["spec"]), "cannot read")


def test_decoding_garbage_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x1f\x8b\x08\x00 this is not really gzip")
    code, out, err = run(capsys, "decode", str(garbage))
    _assert_one_line_error(code, out, err, str(garbage), "corrupt gzip data")


def test_decoding_an_empty_file_means_no_user_data_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    code, out, err = run(capsys, "decode", str(empty))
    assert code == 3
    assert out == ""
    assert err == f"gwms: {empty}: empty, there is no user data\n"


def test_decoding_a_missing_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "decode", str(tmp_path / "absent"))
    _assert_one_line_error(code, out, err, "cannot read")
