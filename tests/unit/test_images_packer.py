"""The Packer wrapper: machine-readable lines become events, artifacts fold together, and a
stopped build leaves no Packer process behind."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest

from gwms.images.packer import Packer, PackerError, collect_artifacts, parse_line

# Lines as Packer 1.6.6 printed them for a qemu build on this project's template.
TRANSCRIPT = """\
1795379903,,ui,say,==> qemu.glidein: Starting VM%!(PACKER_COMMA) booting disk image
1795379903,,ui,message,    qemu.glidein: headless%!(PACKER_COMMA) no GUI.\\n    qemu.glidein: line 2
1795379962,,ui,say,Build 'qemu.glidein' finished after 1 minute 2 seconds.
1795379962,qemu.glidein,artifact-count,1
1795379962,qemu.glidein,artifact,0,builder-id,transcend.qemu
1795379962,qemu.glidein,artifact,0,id,VM
1795379962,qemu.glidein,artifact,0,string,VM files in directory: /tmp/out
1795379962,qemu.glidein,artifact,0,files-count,1
1795379962,qemu.glidein,artifact,0,file,0,/tmp/out/gwms-glidein-debian12.qcow2
1795379962,qemu.glidein,artifact,0,end
"""


def test_commas_and_newlines_are_unescaped() -> None:
    event = parse_line(TRANSCRIPT.splitlines()[1])
    assert event is not None
    assert event.kind == "ui"
    assert event.message == ("    qemu.glidein: headless, no GUI.\n    qemu.glidein: line 2")


def test_lines_that_are_not_machine_readable_are_skipped() -> None:
    assert parse_line("2026/11/22 plugin noise") is None
    assert parse_line("") is None


def test_artifact_lines_fold_into_one_artifact_with_its_files() -> None:
    events = [e for line in TRANSCRIPT.splitlines() if (e := parse_line(line))]
    [artifact] = collect_artifacts(events)
    assert artifact.build == "qemu.glidein"
    assert artifact.builder_id == "transcend.qemu"
    assert artifact.id == "VM"
    assert artifact.files == ["/tmp/out/gwms-glidein-debian12.qcow2"]


def test_an_ami_id_list_keeps_its_commas() -> None:
    line = "1,amazon-ebs.glidein,artifact,0,id,us-east-1:ami-1%!(PACKER_COMMA)eu-west-1:ami-2"
    [artifact] = collect_artifacts([parse_line(line)])  # type: ignore[list-item]
    assert artifact.id == "us-east-1:ami-1,eu-west-1:ami-2"


def test_a_missing_packer_is_one_actionable_sentence(tmp_path: Path) -> None:
    with pytest.raises(PackerError, match=r"packer not found.*apt-get install packer"):
        Packer(str(tmp_path / "no-packer")).version()


@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
def test_the_version_of_the_real_packer_is_read() -> None:
    version = Packer().version()
    assert version.count(".") == 2
    assert version[0].isdigit()


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_events_arrive_while_packer_still_runs(tmp_path: Path) -> None:
    packer = _script(
        tmp_path / "packer",
        "import sys, time\n"
        "print('1,,ui,say,first', flush=True)\n"
        "time.sleep(1.5)\n"
        "print('2,,ui,error,boom%!(PACKER_COMMA) really', flush=True)\n"
        "sys.exit(1)\n",
    )
    seen: list[tuple[str, float]] = []
    started = time.monotonic()
    run = Packer(str(packer)).run(
        ["build", "x"], on_event=lambda e: seen.append((e.message, time.monotonic() - started))
    )
    assert [m for m, _ in seen] == ["first", "boom, really"]
    assert seen[0][1] < 1.0  # streamed, not read after exit
    assert not run.ok
    assert run.errors == ["boom, really"]


def test_an_interrupted_build_stops_packer_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    packer = _script(
        tmp_path / "packer",
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('1,,ui,say,started', flush=True)\n"
        "time.sleep(300)\n",
    )

    def interrupt(_event: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Packer(str(packer)).run(["build", "x"], on_event=interrupt)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"
