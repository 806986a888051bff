"""Local VMs and the local provider, for real: detached process trees running the real bootstrap.

Each VM fetches its user data from its own IMDS on 127.0.0.1, downloads the pilot from a
stand-in factory web (`tests.fakes.factory_web`), runs it (as a real pilot user when the
tests run as root) and powers off. Every test checks, by pid, that nothing it started is
left running.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from gwms.config.factory import LocalCloud
from gwms.factory.providers.base import (
    TAG_BATCH,
    TAG_CLIENT,
    TAG_ENTRY,
    TAG_FACTORY,
    InstanceState,
    LaunchRequest,
    ProviderError,
)
from gwms.factory.providers.local import LocalProvider
from gwms.localvm import runner
from gwms.localvm.vm import descendants
from gwms_context import userdata
from tests.fakes.factory_web import FactoryWeb, glidein_document
from tests.fakes.pilot_user import ensure_pilot_user

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PILOT_USER = "gwmslvmpilot"
TOKEN = "upload-token-local-vm-0123456789"
FACTORY = "gfactory-local-test"
# The pilot: records who it is, then sleeps `-sleep S` (default 0) and exits 0.
TEST_PILOT = b"""#!/bin/sh
echo "uid=$(id -u) id=$GLIDEIN_ID" > marker.txt
seconds=0
while [ $# -gt 0 ]; do
  case $1 in -sleep) seconds=$2 ;; esac
  shift
done
sleep "$seconds"
exit 0
"""
# Quick failures instead of the production minutes, so a broken VM does not stall a test.
BOOTSTRAP_ARGS = ["--web-deadline", "3", "--upload-timeout", "1", "-v"]
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat[stat.rfind(")") + 2 :].startswith("Z")


@contextlib.contextmanager
def pilot_user_for_vms() -> Iterator[str | None]:
    """The pilot user local VMs drop to when the tests run as root."""
    with ensure_pilot_user(PILOT_USER) as user:
        yield user


class VmHost:
    """A base dir of local VMs; at teardown every VM is terminated and every pid checked."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pids: set[int] = set()

    def remember(self) -> None:
        """Note every process of every VM now (so teardown can prove they are gone)."""
        for vm in runner.list_local_vms(self.base):
            vm_pid = vm.pids.get("vm")
            if vm_pid:
                self.pids.add(int(vm_pid))
                self.pids.update(descendants(int(vm_pid)))

    def cleanup(self) -> None:
        self.remember()
        for vm in runner.list_local_vms(self.base):
            runner.terminate_local_vm(self.base, vm.instance_id, wait=20)
        left = [pid for pid in self.pids if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
        assert not left, f"processes left running after the test: {left}"


@contextlib.contextmanager
def vm_host() -> Iterator[VmHost]:
    """A base dir of local VMs; every VM is terminated and every pid checked at the end."""
    # Under /tmp, 0755: the pilot user must reach the VM's work dir (tmp_path is 0700).
    base = Path(tempfile.mkdtemp(prefix="gwms-localvm-test-", dir="/tmp"))
    base.chmod(0o755)
    vms = VmHost(base / "instances")
    try:
        yield vms
    finally:
        vms.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def web() -> Iterator[FactoryWeb]:
    with FactoryWeb(token=TOKEN, files={"glidein_startup.sh": TEST_PILOT}) as server:
        yield server


def user_data(web: FactoryWeb, *pilot_args: str) -> bytes:
    return userdata.encode(glidein_document(web, pilot_args=list(pilot_args)))


def boot(host: VmHost, raw: bytes, pilot_user: str | None, index: int = 0) -> runner.LocalVmHandle:
    return runner.boot_local_vm(
        host.base,
        instance_id=runner.new_instance_id(),
        user_data=raw,
        launch_index=index,
        tags={TAG_BATCH: "gl-batch-1", TAG_FACTORY: FACTORY},
        pilot_user=pilot_user,
        bootstrap_args=BOOTSTRAP_ARGS,
        grace=4,
    )


def vm_state(handle: runner.LocalVmHandle) -> runner.LocalVmInfo:
    info = runner.read_vm(handle.dir)
    assert info is not None
    return info


@pytest.mark.slow
def test_a_local_vm_boots_runs_the_pilot_and_is_terminated_after_power_off(
    host: VmHost, web: FactoryWeb, pilot_user: str | None
) -> None:
    handle = boot(host, user_data(web, "-sleep", "1"), pilot_user, index=3)
    host.pids.add(handle.pid)
    wait_for("the pilot to start", lambda: vm_state(handle).pilot_started)
    host.remember()

    done = wait_for(
        "power-off", lambda: (info := vm_state(handle)).state == runner.TERMINATED and info
    )

    assert done.reason == "powered off by the glidein"
    assert done.launch_index == 3
    assert done.tags[TAG_BATCH] == "gl-batch-1"
    assert done.created <= done.booted <= done.pilot_started <= done.ended
    assert done.pids["pilot"]
    assert done.pids["bootstrap"]
    assert web.stages()[:4] == ["fetched", "verified", "files", "pilot_started"]
    assert web.stages()[-2:] == ["pilot_exited", "shutdown"]
    marker = (handle.dir / "work" / "pilot" / "marker.txt").read_text()
    expected_uid = pwd.getpwnam(pilot_user).pw_uid if pilot_user else os.geteuid()
    assert f"uid={expected_uid} id=gl-batch-1.3" in marker
    assert (handle.dir / "user-data").stat().st_mode & 0o777 == 0o600
    wait_for("every process of the VM to end", lambda: not any(map(alive, host.pids)), 5)


def test_terminating_a_running_vm_ends_its_whole_process_tree(
    host: VmHost, web: FactoryWeb, pilot_user: str | None
) -> None:
    handle = boot(host, user_data(web, "-sleep", "60"), pilot_user)
    running = wait_for("the pilot to start", lambda: vm_state(handle).pids.get("pilot"))
    # vm, bootstrap, the pilot's shell, its sleep
    tree = wait_for("the pilot's sleep", lambda: len(t := descendants(handle.pid)) >= 3 and t)
    tree = {*tree, handle.pid}
    host.pids |= tree
    assert running in tree, "the pilot runs inside the VM's process tree"

    assert runner.terminate_local_vm(host.base, handle.instance_id, wait=20)

    info = vm_state(handle)
    assert info.state == runner.TERMINATED
    assert info.reason == "terminated by signal"
    assert [pid for pid in tree if alive(pid)] == []
    assert "terminated" in web.stages(), "the bootstrap was told and reported it"


def local_cloud(base: Path, max_instances: int = 20) -> LocalCloud:
    return LocalCloud(name="here", type="local", base_dir=str(base), max_instances=max_instances)


def request(raw: bytes, count: int, batch: str = "gl-batch-1") -> LaunchRequest:
    return LaunchRequest(
        batch_id=batch, count=count, entry="entry_a", client="vo1-frontend.main",
        image="local", instance_type="local", userdata=raw, client_token="tok-1",
    )  # fmt: skip


def test_the_local_provider_launches_lists_finds_and_terminates_a_batch(
    host: VmHost, web: FactoryWeb, pilot_user: str | None
) -> None:
    provider = LocalProvider(
        local_cloud(host.base), factory=FACTORY, pilot_user=pilot_user,
        bootstrap_args=BOOTSTRAP_ARGS, grace=4,
    )  # fmt: skip

    launched = provider.launch(request(user_data(web, "-sleep", "60"), 3))
    host.remember()

    assert sorted(i.launch_index for i in launched) == [0, 1, 2]
    assert {i.batch_id for i in launched} == {"gl-batch-1"}
    for instance in launched:
        info = runner.read_vm(host.base / instance.cloud_id)
        assert info is not None
        assert info.tags == {
            TAG_FACTORY: FACTORY, TAG_ENTRY: "entry_a", TAG_CLIENT: "vo1-frontend.main",
            TAG_BATCH: "gl-batch-1",
        }  # fmt: skip
        assert info.launch_index == instance.launch_index
    listed = wait_for(
        "3 running VMs",
        lambda: (
            [i for i in provider.list(FACTORY) if i.state is InstanceState.RUNNING]
            if len([i for i in provider.list(FACTORY) if i.state is InstanceState.RUNNING]) == 3
            else None
        ),
    )
    assert {i.cloud_id for i in listed} == {i.cloud_id for i in launched}
    assert provider.list("another-factory") == []
    assert provider.list(FACTORY, entry="other_entry") == []
    found = provider.find_batch(FACTORY, "gl-batch-1")
    assert [i.launch_index for i in found] == [0, 1, 2]
    wait_for("every pilot to start", lambda: len(
        [v for v in runner.list_local_vms(host.base) if v.pilot_started]) == 3)  # fmt: skip
    host.remember()

    result = provider.terminate([i.cloud_id for i in launched] + ["i-unknown"])

    assert sorted(result.accepted) == sorted([i.cloud_id for i in launched] + ["i-unknown"])
    wait_for("no live VM", lambda: provider.list(FACTORY) == [])
    # Terminated VMs stay findable by tag, so a batch that ran is never taken as not launched.
    assert {i.state for i in provider.find_batch(FACTORY, "gl-batch-1")} == {
        InstanceState.TERMINATED
    }
    assert provider.calls["launch"] == 1
    assert provider.calls["terminate"] == 1
    wait_for("every process to end", lambda: not any(map(alive, host.pids)), 10)


def test_a_full_host_launches_what_fits_and_refuses_when_nothing_fits(
    host: VmHost, web: FactoryWeb, pilot_user: str | None
) -> None:
    provider = LocalProvider(
        local_cloud(host.base, max_instances=2), factory=FACTORY, pilot_user=pilot_user,
        bootstrap_args=BOOTSTRAP_ARGS, grace=4,
    )  # fmt: skip
    raw = user_data(web, "-sleep", "60")

    first = provider.launch(request(raw, 3))
    host.remember()

    assert [i.launch_index for i in first] == [0, 1]
    with pytest.raises(ProviderError, match="max_instances 2"):
        provider.launch(request(raw, 1, batch="gl-batch-2"))


def test_oversized_user_data_is_refused_before_anything_is_booted(host: VmHost) -> None:
    provider = LocalProvider(local_cloud(host.base), factory=FACTORY)
    with pytest.raises(ProviderError, match="at most 16384"):
        provider.launch(request(os.urandom(20_000), 1))
    assert runner.list_local_vms(host.base) == []


CRASHING_FACTORY = textwrap.dedent("""\
    import os, sys
    from pathlib import Path
    from gwms.config.factory import LocalCloud
    from gwms.factory.providers.base import LaunchRequest
    from gwms.factory.providers.local import LocalProvider
    base, raw_file, user = sys.argv[1], sys.argv[2], sys.argv[3] or None
    cloud = LocalCloud(name="here", type="local", base_dir=base)
    provider = LocalProvider(cloud, factory="gfactory-local-test", pilot_user=user,
                             bootstrap_args=["--web-deadline", "3", "--upload-timeout", "1"])
    provider.launch(LaunchRequest(
        batch_id="gl-crash", count=2, entry="entry_a", client="vo1-frontend.main",
        image="local", instance_type="local", userdata=Path(raw_file).read_bytes(),
        client_token="tok-crash"))
    os.kill(os.getpid(), 9)  # the factory dies with its VMs running
    """)


def test_vms_outlive_a_killed_factory_and_a_new_provider_finds_them(
    host: VmHost, web: FactoryWeb, pilot_user: str | None, tmp_path: Path
) -> None:
    raw_file = tmp_path / "user-data"
    raw_file.write_bytes(user_data(web, "-sleep", "60"))

    factory = subprocess.run(
        [sys.executable, "-c", CRASHING_FACTORY, str(host.base), str(raw_file), pilot_user or ""],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert factory.returncode == -signal.SIGKILL, factory.stderr
    host.remember()
    vm_pids = {int(vm.pids["vm"]) for vm in runner.list_local_vms(host.base) if vm.pids.get("vm")}
    assert len(vm_pids) == 2
    assert all(map(alive, vm_pids))
    provider = LocalProvider(local_cloud(host.base), factory=FACTORY)
    listed = wait_for(
        "both VMs running",
        lambda: (
            (found := provider.list(FACTORY))
            and all(i.state is InstanceState.RUNNING for i in found)
            and found
        ),
    )
    assert sorted(i.glidein_id for i in listed) == ["gl-crash.0", "gl-crash.1"]

    provider.terminate([i.cloud_id for i in listed])

    wait_for("no live VM", lambda: provider.list(FACTORY) == [])
    wait_for("every process to end", lambda: not any(map(alive, host.pids)), 10)
