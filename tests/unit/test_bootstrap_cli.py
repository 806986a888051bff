"""gwms-bootstrap detect/fetch as operators and the systemd unit see them: output, exit codes."""

import base64
import io
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gwms_context import log
from gwms_context.bootstrap import EXIT_ERROR, EXIT_NO_USER_DATA, EXIT_OK, main
from tests.fakes.metadata import make_vm_root

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^gwms-bootstrap\[\d+\]: (error|warning|info|debug): ")


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_detect_prints_only_the_middleware_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_vm_root(tmp_path, dmi={"product_name": "OpenStack Nova"}, cmdline="ro quiet")

    assert main(["detect", "--root", str(root)]) == EXIT_OK

    captured = capsys.readouterr()
    assert captured.out == "openstack\n"
    assert captured.err == ""


def test_detect_verbose_logs_the_evidence_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_vm_root(tmp_path, labels=("CONTEXT",))

    assert main(["detect", "-v", "--root", str(root)]) == EXIT_OK

    captured = capsys.readouterr()
    assert captured.out == "opennebula\n"
    assert "opennebula: confidence 2: OpenNebula context CD" in captured.err
    assert all(LINE.match(line) for line in captured.err.splitlines())


@pytest.mark.parametrize(
    ("dmi", "labels"), [({}, ()), ({"sys_vendor": "Amazon EC2"}, ("config-2",))]
)
def test_detect_without_a_single_answer_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dmi: dict, labels: tuple
) -> None:
    root = make_vm_root(tmp_path, dmi=dmi, labels=labels)

    assert main(["detect", "--root", str(root)]) == EXIT_ERROR

    (line,) = error_lines(capsys)
    assert LINE.match(line)
    assert "--middleware NAME" in line


def test_fetch_writes_the_raw_user_data_to_a_private_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = b"\x1f\x8b\x08\x00 gzip-ish \x00\xff"
    drive = tmp_path / "context"
    drive.mkdir()
    (drive / "context.sh").write_text(
        f"USER_DATA='{base64.b64encode(raw).decode()}'\nUSER_DATA_ENCODING='base64'\n"
    )
    output = tmp_path / "out" / "user-data"
    output.parent.mkdir()

    code = main(
        ["fetch", "--middleware", "opennebula", "--config-drive", str(drive), "-o", str(output)]
    )

    assert code == EXIT_OK
    assert output.read_bytes() == raw
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert os.listdir(output.parent) == ["user-data"], "no temporary file left behind"
    assert capsys.readouterr().err == ""


def test_fetch_replaces_an_old_output_file_atomically(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "user-data").write_bytes(b"new")
    output = tmp_path / "user-data"
    output.write_bytes(b"old data from a previous boot")
    output.chmod(0o644)

    assert (
        main(["fetch", "--middleware", "nocloud", "--config-drive", str(seed), "-o", str(output)])
        == 0
    )

    assert output.read_bytes() == b"new"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


def test_fetch_to_stdout_with_a_dash(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "user-data").write_bytes(b"\x00binary\xff")

    assert main(["fetch", "--middleware", "nocloud", "--config-drive", str(seed), "-o", "-"]) == 0

    assert capsysbinary.readouterr().out == b"\x00binary\xff"


def test_fetch_exits_3_and_writes_nothing_when_the_cloud_has_no_user_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drive = tmp_path / "drive"
    (drive / "openstack/latest").mkdir(parents=True)
    output = tmp_path / "user-data"

    code = main(
        ["fetch", "--middleware", "openstack", "--config-drive", str(drive), "-o", str(output)]
    )

    assert code == EXIT_NO_USER_DATA
    assert not output.exists()
    (line,) = error_lines(capsys)
    assert "warning: no user data: the openstack middleware found none" in line


def test_fetch_detects_the_middleware_when_none_is_given(tmp_path: Path) -> None:
    root = make_vm_root(
        tmp_path / "root",
        files={"var/lib/cloud/instance/user-data.txt": b"#cloud-config\n", "run/cloud-init/r": ""},
    )
    output = tmp_path / "user-data"

    assert main(["fetch", "--root", str(root), "-o", str(output)]) == EXIT_OK

    assert output.read_bytes() == b"#cloud-config\n"


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--middleware", "azure"], "unknown middleware 'azure'"),
        (["--middleware", "ec2", "--metadata-url", "169.254.169.254"], "is not an http://"),
        (["--middleware", "ec2", "--timeout", "0"], "must be positive"),
        (["--middleware", "opennebula", "--config-drive", "/nonexistent"], "has no context.sh"),
        (["--root", "/nonexistent"], "no middleware detected"),
    ],
)
def test_fetch_errors_exit_2_with_one_line_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list, what: str
) -> None:
    assert main(["fetch", *args, "-o", str(tmp_path / "out")]) == EXIT_ERROR

    (line,) = error_lines(capsys)
    assert LINE.match(line)
    assert what in line
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "user-data").write_bytes(b"x")
    output = tmp_path / "missing-dir" / "user-data"

    assert (
        main(["fetch", "--middleware", "nocloud", "--config-drive", str(seed), "-o", str(output)])
        == 2
    )

    (line,) = error_lines(capsys)
    assert f"cannot write the user data to {output}" in line


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fetch"])  # -o is required
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    root = make_vm_root(tmp_path, dmi={"sys_vendor": "Google"})

    result = subprocess.run(
        [sys.executable, "-m", "gwms_context.bootstrap", "detect", "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )

    assert (result.returncode, result.stdout, result.stderr) == (0, "gce\n", "")


def test_log_lines_carry_a_syslog_priority_only_when_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = (tmp_path / "journal").open("w")
    info = os.fstat(journal.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    try:
        log.setup(verbosity=1, stream=journal)
        log.get_logger("test").error("first\nsecond")
        log.get_logger("test").info("progress")
        journal.flush()
        lines = (tmp_path / "journal").read_text().splitlines()

        terminal = io.StringIO()
        log.setup(verbosity=0, stream=terminal)
        log.get_logger("test").warning("plain")
        log.get_logger("test").info("hidden at verbosity 0")
    finally:
        journal.close()
        log.setup()

    pid = os.getpid()
    assert lines == [
        f"<3>gwms-bootstrap[{pid}]: error: first",
        f"<3>gwms-bootstrap[{pid}]: error: second",
        f"<6>gwms-bootstrap[{pid}]: info: progress",
    ]
    assert terminal.getvalue() == f"gwms-bootstrap[{pid}]: warning: plain\n"
