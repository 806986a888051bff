"""`gwms demo` end to end: the whole stack as subprocesses, 10 jobs, nothing left behind.

Each test runs the real command (collector, factory with its web service, frontend, VMs
running the real bootstrap and pilot; moto_server for ec2) and reads its `--json`
summary; then checks from outside that every process it reports is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gwms.demo.supervisor import pid_alive
from gwms.localvm.runner import TERMINATED, list_local_vms

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

JOBS = 10
MOTO = Path(sys.executable).parent / "moto_server"


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A run directory the pilot user can reach when the tests run as root (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="gwms-demo-e2e-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def demo_argv(run_dir: Path, cloud: str) -> list[str]:
    return [sys.executable, "-m", "gwms", "demo", "--jobs", str(JOBS), "--json",
            "--cloud", cloud, "--run-dir", str(run_dir), "--timeout", "240"]  # fmt: skip


def all_pids(summary: dict[str, Any]) -> list[int]:
    return [*summary["processes"]["pids"].values(), *summary["processes"]["vm_pids"]]


def assert_nothing_left(summary: dict[str, Any], run_dir: Path) -> None:
    alive = [pid for pid in all_pids(summary) if pid_alive(pid)]
    assert alive == [], f"processes survived the demo: {alive}"
    assert summary["processes"]["left"] == []
    assert summary["vms"]["leaked"] == 0
    for vm in list_local_vms(run_dir / "vms"):
        assert vm.state == TERMINATED, f"VM {vm.instance_id} is {vm.state}"


@pytest.mark.parametrize("cloud", ["local", "ec2", "openstack"])
def test_demo_runs_every_job_on_two_entries_and_leaves_nothing_running(
    run_dir: Path, cloud: str
) -> None:
    if cloud == "ec2" and not MOTO.exists():
        pytest.skip(f"moto_server not installed at {MOTO} (pip install 'moto[server]')")
    done = subprocess.run(
        demo_argv(run_dir, cloud), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.stdout.strip(), done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert done.returncode == 0, (summary["problems"], done.stderr[-3000:])
    assert summary["ok"] is True
    assert summary["jobs"] == {"submitted": JOBS, "done": JOBS, "failed": 0, "not_done": 0}
    vms = summary["vms"]
    assert vms["launched"] >= 2
    assert vms["terminated"] == vms["launched"]
    assert all(n > 0 for n in vms["by_entry"].values()), vms["by_entry"]  # both entries used
    latencies = {span["label"]: span for span in summary["latencies"]}
    total = latencies["submitted -> job started"]
    assert total["samples"] == JOBS
    assert 0 <= total["median"] <= total["max"] < 240
    assert latencies["requested -> pilot in the pool"]["published"] == 90
    assert Path(summary["logs"]["factory"]).is_file()
    assert Path(summary["logs"]["frontend"]).is_file()
    if cloud == "ec2":
        assert summary["cloud_calls"].get("RunInstances", 0) >= 1
        assert Path(summary["logs"]["moto_server"]).is_file()
    if cloud == "openstack":
        assert summary["cloud_calls"].get("create_server", 0) >= 1
    assert_nothing_left(summary, run_dir)


def test_sigint_in_the_middle_stops_everything_and_exits_130(run_dir: Path) -> None:
    proc = subprocess.Popen(
        demo_argv(run_dir, "local"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        # Interrupt once a VM is up: the stack, the VMs and their pilots are all running.
        while time.monotonic() < deadline and proc.poll() is None:
            if any(vm.state != TERMINATED for vm in list_local_vms(run_dir / "vms")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the demo ended before a VM booted"
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert summary["ok"] is False
    assert summary["vms"]["launched"] >= 1
    assert_nothing_left(summary, run_dir)
