"""Local VMs as their directories say: state.json read back, dead VMs, reaping, process trees.

These tests write VM directories by hand (no VM process), start only short `sleep`
processes they end themselves, and check how the runner reads what it finds.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from gwms.factory.daemon import FINISH_GRACE, status_transition
from gwms.factory.journal import GlideinRecord, GlideinState
from gwms.localvm import runner
from gwms.localvm.vm import STATE_FILE, descendants, read_json, write_json_atomic


def state(instance_id: str, **changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "format": 1,
        "instance_id": instance_id,
        "batch": "gl-1",
        "launch_index": 2,
        "instance_type": "local",
        "tags": {"gwms:batch": "gl-1", "gwms:factory": "f"},
        "state": "running",
        "reason": None,
        "stage": None,
        "pids": {"vm": None, "bootstrap": None, "pilot": None},
        "times": {"created": int(time.time()), "booted": None, "pilot_started": None,
                  "ended": None},
    }  # fmt: skip
    base.update(changes)
    return base


def make_vm(base: Path, instance_id: str, **changes: object) -> Path:
    directory = base / instance_id
    directory.mkdir(parents=True)
    write_json_atomic(directory / STATE_FILE, state(instance_id, **changes))
    return directory


def test_state_json_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json_atomic(path, {"state": "pending"})
    write_json_atomic(path, {"state": "running"})
    assert read_json(path) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"], "no temp file left behind"
    path.write_text("{not json")
    assert read_json(path) is None


def test_a_vm_whose_process_is_gone_without_recording_its_end_is_listed_as_error(
    tmp_path: Path,
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    make_vm(tmp_path, "i-dead", pids={"vm": dead.pid, "bootstrap": None, "pilot": None})
    make_vm(tmp_path, "i-done", state="terminated", reason="powered off by the glidein")

    listed = {vm.instance_id: vm for vm in runner.list_local_vms(tmp_path)}

    assert listed["i-dead"].state == runner.ERROR
    assert "never recorded its end" in str(listed["i-dead"].reason)
    assert listed["i-done"].state == runner.TERMINATED
    assert listed["i-done"].launch_index == 2
    assert listed["i-done"].tags["gwms:batch"] == "gl-1"


def test_a_recycled_pid_does_not_make_a_dead_vm_look_alive(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        make_vm(tmp_path, "i-reused", pids={"vm": other.pid, "bootstrap": None, "pilot": None})
        [vm] = runner.list_local_vms(tmp_path)
        assert vm.state == runner.ERROR
    finally:
        other.kill()
        other.wait()


def test_a_vm_still_starting_is_pending_then_error_when_it_never_came_up(tmp_path: Path) -> None:
    young = tmp_path / "i-young"
    young.mkdir()
    write_json_atomic(young / "vm.json", {"instance_id": "i-young", "created": int(time.time())})
    old = tmp_path / "i-old"
    old.mkdir()
    write_json_atomic(old / "vm.json", {"instance_id": "i-old", "created": 1})

    listed = {vm.instance_id: vm.state for vm in runner.list_local_vms(tmp_path)}

    assert listed == {"i-young": runner.PENDING, "i-old": runner.ERROR}


def test_terminating_a_dead_vm_records_it_terminated_and_unknown_ids_are_accepted(
    tmp_path: Path,
) -> None:
    make_vm(tmp_path, "i-dead", pids={"vm": 999_999_999, "bootstrap": None, "pilot": None})

    assert runner.terminate_local_vm(tmp_path, "i-dead")
    assert runner.terminate_local_vm(tmp_path, "i-never-existed")

    [vm] = runner.list_local_vms(tmp_path)
    assert vm.state == runner.TERMINATED
    assert vm.ended is not None


def test_reaping_removes_only_vms_terminated_long_enough_ago(tmp_path: Path) -> None:
    long_ago = {"created": 1, "booted": 1, "pilot_started": None, "ended": 10}
    make_vm(tmp_path, "i-old", state="terminated", times=long_ago)
    make_vm(tmp_path, "i-recent", state="terminated",
            times={**long_ago, "ended": int(time.time())})  # fmt: skip
    make_vm(tmp_path, "i-alive-pending", state="pending")

    removed = runner.reap_local_vms(tmp_path, older_than=3600)

    assert removed == ["i-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i-alive-pending", "i-recent"]


def test_descendants_finds_grandchildren_in_other_sessions() -> None:
    child = subprocess.Popen(
        ["sh", "-c", "setsid sleep 30 & sleep 30 & wait"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 5
        found: list[int] = []
        while time.monotonic() < deadline and len(found) < 2:
            found = descendants(child.pid)
            time.sleep(0.02)
        assert len(found) >= 2
        assert os.getpid() not in found
    finally:
        os.killpg(child.pid, 9)
        for pid in descendants(child.pid):
            os.kill(pid, 9)
        child.wait()


def test_new_instance_ids_look_like_ec2_ids() -> None:
    ids = {runner.new_instance_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("i-") and len(i) == 19 for i in ids)


# --- how the factory reads a VM's status reports ------------------------------------------


def record(state: GlideinState) -> GlideinRecord:
    return GlideinRecord(
        glidein_id="gl-1.0", batch_id="gl-1", launch_index=0, cloud_id="i-1", entry="e",
        client="c", frontend="f", cloud="local", provider_key="local", state=state,
        launched_at=0, updated_at=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "state", "age", "expected"),
    [
        ("pilot_started", GlideinState.LAUNCHING, 0, (GlideinState.RUNNING, None)),
        ("pilot_started", GlideinState.RETIRING, 0, (None, None)),
        ("files", GlideinState.LAUNCHING, 999, (None, None)),
        ("shutdown", GlideinState.RUNNING, 0, (None, "vm_shutdown")),
        ("terminated", GlideinState.RUNNING, 0, (None, "vm_terminated")),
        ("pilot_exited", GlideinState.RUNNING, 0, (None, None)),
        ("pilot_exited", GlideinState.RUNNING, FINISH_GRACE, (None, "pilot_exited")),
        ("failed", GlideinState.LAUNCHING, FINISH_GRACE + 1, (None, "glidein_failed")),
    ],
)
def test_a_status_report_makes_a_glidein_running_or_ends_it(
    stage: str, state: GlideinState, age: int, expected: tuple[object, object]
) -> None:
    now = 1_800_000_000
    status = {"stage": stage, "received_at": now - age}
    assert status_transition(record(state), status, now) == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops the pilot to another user")
def test_as_root_a_base_dir_the_pilot_user_cannot_reach_is_refused_before_booting(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o700)
    with pytest.raises(runner.LocalVmError, match="cannot traverse"):
        runner.boot_local_vm(
            tmp_path / "instances", instance_id="i-1", user_data=b"x", launch_index=0, tags={}
        )
    assert list((tmp_path / "instances").iterdir()) == []
