"""Children of the bootstrap: time limits that end the whole process group, privilege drop."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

import pytest

from gwms_context import power, privileges, process

ME = privileges.current()


def run(argv: list[str], tmp_path: Path, limit: float, identity=ME, **kw) -> process.Outcome:
    with (tmp_path / "out").open("ab") as out:
        return process.run_limited(
            argv,
            identity,
            {"PATH": os.environ["PATH"]},
            str(tmp_path),
            output=out,
            limit=limit,
            **kw,
        )


def test_a_child_within_its_limit_reports_its_exit_code(tmp_path: Path) -> None:
    outcome = run(["/bin/sh", "-c", "echo hi; exit 7"], tmp_path, limit=10)

    assert (outcome.returncode, outcome.timed_out) == (7, False)
    assert outcome.describe() == "exit code 7"
    assert (tmp_path / "out").read_text() == "hi\n"


def test_the_limit_ends_the_child_and_every_process_it_started(tmp_path: Path) -> None:
    script = "sleep 60 & echo $! > grandchild; trap '' TERM; sleep 60"
    started = time.monotonic()

    outcome = run(["/bin/sh", "-c", script], tmp_path, limit=0.5, grace=0.5)

    assert outcome.timed_out
    assert outcome.returncode == -9  # it ignored SIGTERM, so SIGKILL after the grace
    assert time.monotonic() - started < 5
    grandchild = int((tmp_path / "grandchild").read_text())
    time.sleep(0.1)
    assert (
        not Path(f"/proc/{grandchild}").exists()
        or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]
    )


def test_ticks_run_while_the_child_runs(tmp_path: Path) -> None:
    ticks: list[float] = []

    run(["sleep", "1"], tmp_path, limit=10, on_tick=lambda: ticks.append(1), tick=0.2)

    assert 3 <= len(ticks) <= 6


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_the_child_runs_as_the_pilot_user_with_no_way_back(tmp_path: Path) -> None:
    nobody = privileges.pilot_identity("nobody")
    tmp_path.chmod(0o777)  # the child writes its output here

    outcome = run(
        ["/bin/sh", "-c", "id -u; id -G; sudo -n true 2>/dev/null || echo no-root"],
        tmp_path,
        limit=10,
        identity=nobody,
    )

    uid, groups, last = (tmp_path / "out").read_text().split("\n")[:3]
    assert outcome.returncode == 0
    assert int(uid) == pwd.getpwnam("nobody").pw_uid
    assert "0" not in groups.split()
    assert last == "no-root"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_root_pilot_user_is_refused() -> None:
    with pytest.raises(privileges.PrivilegeError, match="has uid 0"):
        privileges.pilot_identity("root")


def test_an_unknown_pilot_user_is_refused_or_skipped_when_not_root() -> None:
    if os.geteuid() == 0:
        with pytest.raises(privileges.PrivilegeError, match="does not exist on this VM"):
            privileges.pilot_identity("no-such-gwms-user")
    else:
        assert privileges.pilot_identity("no-such-gwms-user").uid == os.geteuid()


def test_secrets_are_created_0600_and_replace_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    target = tmp_path / "x509_proxy"
    target.symlink_to(victim)

    privileges.write_secret(str(target), b"secret", None)

    assert victim.read_text() == "untouched"
    assert not target.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"secret"


def test_the_power_off_command_runs_and_failures_are_reported(tmp_path: Path) -> None:
    marker = tmp_path / "off"
    assert power.power_off(f"touch {marker}")
    assert marker.exists()
    assert not power.power_off("false")
    assert not power.power_off(str(tmp_path / "missing-command"))


def test_the_default_power_off_command_fits_the_init_system() -> None:
    command = power.default_command()
    if (
        os.path.isdir("/run/systemd/system")
        and subprocess.run(["which", "systemctl"], capture_output=True, check=False).returncode == 0
    ):
        assert command == ["systemctl", "poweroff"]
    else:
        assert command == ["shutdown", "-h", "now"]
