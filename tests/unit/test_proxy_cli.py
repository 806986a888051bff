"""`gwms proxy init|derive|info`: files written, warnings, output, one-line errors (exit 2)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gwms.cli import main
from gwms.credentials import proxy as px
from gwms.credentials.testca import TestPki, make_ca, make_user_cert, write_test_pki

IDENTITY = "/DC=org/DC=gwms-cloud-test/OU=People/CN=Carol CLI"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return write_test_pki(tmp_path_factory.mktemp("pki"), user_cn="Carol CLI", hours=48)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def init(capsys: pytest.CaptureFixture[str], pki: TestPki, out: Path, *extra: str) -> str:
    code, stdout, stderr = run(
        capsys, "proxy", "init", "--cert", str(pki.user_cert), "--key", str(pki.user_key),
        "--bits", "1024", "-o", str(out), *extra,
    )  # fmt: skip
    assert code == 0, stderr
    return stdout + stderr


def test_init_writes_a_0600_proxy_for_the_user(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    out = tmp_path / "x509up"
    text = init(capsys, pki, out, "--hours", "2")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    info = px.inspect_proxy(px.load_proxy(out))
    assert info.identity == IDENTITY
    assert info.type == px.TYPE_IMPERSONATION
    assert timedelta(hours=1, minutes=59) < info.time_left <= timedelta(hours=2)
    assert f"wrote RFC 3820 compliant impersonation proxy for {IDENTITY} to {out}" in text
    assert "warning" not in text


def test_init_limited_makes_a_limited_proxy(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    out = tmp_path / "limited.pem"
    init(capsys, pki, out, "--limited")
    assert px.load_proxy(out).limited


def test_init_warns_on_stderr_when_the_lifetime_is_clamped(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    out = tmp_path / "long.pem"
    code, stdout, stderr = run(
        capsys, "proxy", "init", "--cert", str(pki.user_cert), "--key", str(pki.user_key),
        "--bits", "1024", "--hours", "1000", "-o", str(out),
    )  # fmt: skip
    assert code == 0
    assert "gwms: warning: the proxy lifetime was cut to 4" in stderr  # 47:59:xx left
    assert "(asked 1000 h)" in stderr
    assert "warning" not in stdout
    loaded = px.load_proxy(out)
    assert loaded.cert.not_valid_after_utc == loaded.chain[0].not_valid_after_utc


def test_derive_makes_a_shorter_proxy_below_the_first(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    parent, child = tmp_path / "parent.pem", tmp_path / "child.pem"
    init(capsys, pki, parent)
    code, _, stderr = run(
        capsys, "proxy", "derive", "--from", str(parent), "--hours", "1", "--bits", "1024",
        "-o", str(child),
    )  # fmt: skip
    assert code == 0, stderr
    assert stderr == ""
    derived = px.load_proxy(child)
    assert derived.chain[0] == px.load_proxy(parent).cert
    assert px.inspect_proxy(derived).time_left <= timedelta(hours=1)
    assert stat.S_IMODE(child.stat().st_mode) == 0o600


def test_derive_from_a_limited_proxy_is_limited_and_says_so(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    parent, child = tmp_path / "limited.pem", tmp_path / "child.pem"
    init(capsys, pki, parent, "--limited", "--hours", "3")
    code, _, stderr = run(
        capsys, "proxy", "derive", "--from", str(parent), "--hours", "5", "--bits", "1024",
        "-o", str(child),
    )  # fmt: skip
    assert code == 0
    assert f"{parent} is a limited proxy, so the new proxy is limited too" in stderr
    assert "lifetime was cut" in stderr
    assert px.load_proxy(child).limited


def test_info_prints_identity_type_time_left_and_chain(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    out = tmp_path / "p.pem"
    init(capsys, pki, out, "--limited")
    code, stdout, _ = run(capsys, "proxy", "info", str(out))
    assert code == 0
    fields = dict(line.split(": ", 1) for line in stdout.splitlines())
    lines = {label.strip(): value for label, value in fields.items()}
    assert lines["identity"] == IDENTITY
    assert lines["type"] == px.TYPE_LIMITED
    assert lines["strength"] == "1024 bits"
    assert lines["timeleft"].startswith("11:59:")
    assert f"chain    : 1 {IDENTITY}" in stdout


def test_info_json_is_one_object_with_the_fields(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    out = tmp_path / "p.pem"
    init(capsys, pki, out, "--hours", "3")
    code, stdout, _ = run(capsys, "proxy", "info", "--json", str(out))
    assert code == 0
    data = json.loads(stdout)
    assert data["identity"] == IDENTITY
    assert data["type"] == px.TYPE_IMPERSONATION
    assert data["limited"] is False
    assert 3 * 3600 - 60 < data["time_left_seconds"] <= 3 * 3600
    assert data["chain"] == [IDENTITY]
    assert data["path"] == str(out)


def test_info_reads_x509_user_proxy_by_default(
    capsys: pytest.CaptureFixture[str],
    pki: TestPki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "env.pem"
    init(capsys, pki, out)
    monkeypatch.setenv("X509_USER_PROXY", str(out))
    code, stdout, _ = run(capsys, "proxy", "info")
    assert code == 0
    assert f"path     : {out}" in stdout


def test_info_still_describes_an_expired_proxy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    ca, ca_key = make_ca("old CA", days=2)
    user, key = make_user_cert(ca, ca_key, "Old", hours=3, not_before=now - timedelta(hours=2))
    old = px.create_proxy(user, key, (), 0.5, key_size=1024, now=now - timedelta(hours=1))
    path = px.write_proxy(old, tmp_path / "old.pem")
    code, stdout, _ = run(capsys, "proxy", "info", str(path))
    assert code == 0
    assert "timeleft : 0:00:00  (expired)" in stdout
    code, _, stderr = run(capsys, "proxy", "derive", "--from", str(path), "-o", str(tmp_path / "x"))
    assert code == 2
    assert "expired at" in stderr


def test_encrypted_key_is_read_with_a_pass_phrase_file(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    key = serialization.load_pem_private_key(pki.user_key.read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"open sesame"),
        )
    )
    locked.chmod(0o600)
    phrase = tmp_path / "phrase"
    phrase.write_text("open sesame\n")
    base = ["proxy", "init", "--cert", str(pki.user_cert), "--key", str(locked)]
    code, _, stderr = run(capsys, *base, "-o", str(tmp_path / "p.pem"))
    assert code == 2  # stdin is not a terminal under pytest, so nothing is asked
    assert stderr == f"gwms: the private key in {locked} is encrypted; give its pass phrase\n"
    code, _, stderr = run(
        capsys,
        *base,
        "--passphrase-file",
        str(phrase),
        "--bits",
        "1024",
        "-o",
        str(tmp_path / "p.pem"),
    )
    assert code == 0, stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["proxy", "info", "/nonexistent/x509up"],
            "cannot read the proxy file /nonexistent/x509up",
        ),
        (["proxy", "derive", "--from", "/nonexistent/p", "-o", "/tmp/unused"], "cannot read"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, stdout, stderr = run(capsys, *argv)
    assert code == 2
    assert stdout == ""
    assert stderr.startswith(f"gwms: {message}")
    assert stderr.count("\n") == 1


def test_wrong_key_for_the_certificate_is_exit_2(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    other = write_test_pki(tmp_path / "other")
    out = tmp_path / "p.pem"
    code, _, stderr = run(
        capsys, "proxy", "init", "--cert", str(pki.user_cert), "--key", str(other.user_key),
        "-o", str(out),
    )  # fmt: skip
    assert code == 2
    assert (
        stderr == f"gwms: the private key in {other.user_key} does not belong to its certificate\n"
    )
    assert not out.exists()


def test_zero_hours_is_refused(
    capsys: pytest.CaptureFixture[str], pki: TestPki, tmp_path: Path
) -> None:
    code, _, stderr = run(
        capsys, "proxy", "init", "--cert", str(pki.user_cert), "--key", str(pki.user_key),
        "--hours", "0", "-o", str(tmp_path / "p.pem"),
    )  # fmt: skip
    assert code == 2
    assert "lifetime must be positive" in stderr
