"""`gwms demo` runs from a bare checkout and shows what the VM would decode."""

import json
from pathlib import Path

import pytest

from gwms.cli import main
from gwms_context import userdata


def test_demo_writes_userdata_the_vm_can_decode_and_never_prints_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    decoded = userdata.decode((tmp_path / "userdata.bin").read_bytes())
    assert decoded.x509_proxy is not None
    assert "BEGIN CERTIFICATE" not in out
    assert "demo-upload-token" not in out
    shown = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert shown["glidein_id"] == decoded.glidein_id
    assert (tmp_path / "user-proxy.pem").stat().st_mode & 0o777 == 0o600
