"""Boot, list and terminate local "VMs" under one base directory (the local provider, the demo).

Each VM is a directory `<base_dir>/<instance id>/` and a detached `gwms.localvm.vm` process
in a session of its own (`vm.py` forks away from the caller), so VMs outlive a crashed
factory like real VMs do, and a new factory finds them again by reading the directories.
The caller's environment never reaches a VM (it may hold cloud secrets): the bootstrap
gets PATH, LANG, HOME, PYTHONPATH and what `env` adds. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gwms.errors import GwmsError
from gwms.localvm.vm import (
    PENDING,
    PID_FILE,
    SHUTTING_DOWN,
    SPEC_FILE,
    STATE_FILE,
    TERMINATED,
    USER_DATA_FILE,
    WORK_DIR,
    read_json,
    write_json_atomic,
)

ERROR = "error"  # a VM whose process died without recording its end
BOOT_TIMEOUT = 30.0  # seconds for `vm.py --detach` to hand over
PENDING_GRACE = 60  # a VM without a live process is pending this long after creation
REAP_AFTER = 3600  # terminated VMs stay listed this long, like EC2's terminated instances


class LocalVmError(GwmsError):
    """A local VM cannot be booted or managed."""


@dataclass(frozen=True)
class LocalVmHandle:
    """What `boot_local_vm` returns: where the VM lives and its process."""

    instance_id: str
    dir: Path
    pid: int


@dataclass(frozen=True)
class LocalVmInfo:
    """One VM as its state.json (and its process) say; times are epoch seconds."""

    instance_id: str
    dir: Path
    state: str  # pending, running, shutting-down, terminated, error
    batch: str = ""
    launch_index: int = 0
    instance_type: str = "local"
    tags: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None
    stage: str | None = None
    pids: Mapping[str, int | None] = field(default_factory=dict)
    created: int | None = None
    booted: int | None = None
    pilot_started: int | None = None
    ended: int | None = None

    @property
    def work_dir(self) -> Path:
        return self.dir / WORK_DIR


def new_instance_id() -> str:
    """An EC2-shaped id: `i-` and 17 hex digits."""
    return "i-" + secrets.token_hex(9)[:17]


def _contextualization_path() -> str | None:
    """The directory holding `gwms_context`, for the VM's PYTHONPATH (any Python can boot)."""
    import gwms_context

    return str(Path(gwms_context.__file__).resolve().parent.parent)


@contextlib.contextmanager
def host_lock(base_dir: Path) -> Iterator[None]:
    """Serialise launches on this host (capacity checks must not race)."""
    base_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(base_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def boot_local_vm(
    base_dir: Path,
    *,
    instance_id: str,
    user_data: bytes,
    launch_index: int,
    tags: Mapping[str, str],
    instance_type: str = "local",
    python: str = sys.executable,
    pilot_user: str | None = None,
    env: Mapping[str, str] | None = None,
    bootstrap_args: Sequence[str] = (),
    grace: float = 10.0,
) -> LocalVmHandle:
    """Create the VM's directory and start its process, detached; returns once it runs.

    `python` runs the bootstrap (the "image's" Python: it must be usable by the pilot user
    when the caller is root), `bootstrap_args` are added to `gwms-bootstrap run`, `grace`
    is how long a terminated VM's bootstrap may take to stop the pilot and ship its logs.
    """
    base_dir = Path(base_dir)
    directory = base_dir / instance_id
    try:
        base_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # the bootstrap drops the pilot to an unprivileged user
            _check_reachable(base_dir)
        directory.mkdir(mode=0o755)
        directory.chmod(0o755)  # the pilot user must reach work/ below it
    except FileExistsError:
        raise LocalVmError(
            f"local instance {instance_id} already exists in {base_dir}; use a new instance id"
        ) from None
    except OSError as exc:
        raise LocalVmError(
            f"cannot create local instance directory {directory} ({exc.strerror}); make"
            " base_dir writable by the factory user"
        ) from None
    fd = os.open(directory / USER_DATA_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(user_data)
    spec = {
        "instance_id": instance_id,
        "batch": tags.get("gwms:batch", ""),
        "launch_index": launch_index,
        "instance_type": instance_type,
        "tags": dict(tags),
        "python": python,
        "pythonpath": _contextualization_path(),
        "pilot_user": pilot_user,
        "env": dict(env or {}),
        "bootstrap_args": list(bootstrap_args),
        "grace": grace,
        "created": int(time.time()),
    }
    write_json_atomic(directory / SPEC_FILE, spec)
    argv = [sys.executable, "-m", "gwms.localvm.vm", "--dir", str(directory), "--detach"]
    with (directory / "vm.log").open("ab") as log:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
            timeout=BOOT_TIMEOUT,
            check=False,
            env=_vm_process_env(),
        )
    try:
        pid = int(result.stdout.decode().strip())
    except ValueError:
        raise LocalVmError(
            f"local instance {instance_id} did not start (exit {result.returncode}); see"
            f" {directory / 'vm.log'}"
        ) from None
    return LocalVmHandle(instance_id, directory, pid)


def _vm_process_env() -> dict[str, str]:
    """The VM manager's own environment: enough to import gwms, no cloud secrets."""
    keep = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TZ")
    return {k: v for k, v in os.environ.items() if k in keep}


def _check_reachable(base_dir: Path) -> None:
    for parent in (base_dir.resolve(), *base_dir.resolve().parents):
        if not parent.stat().st_mode & 0o001:
            raise LocalVmError(
                f"local instances in {base_dir} are below {parent}, which other users cannot"
                " traverse, so the pilot user cannot reach them; set the local cloud's"
                " base_dir to a directory such as /var/lib/gwms-local (mode 0755)"
            )


# --- the process behind a VM ---------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _is_vm_process(pid: int | None, directory: Path) -> bool:
    """True when `pid` is alive and is this VM's manager (not a recycled pid, not a zombie)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat[stat.rfind(")") + 2 :].startswith("Z"):
        return False
    argv = _cmdline(pid)
    return "gwms.localvm.vm" in argv and str(directory) in argv


def _vm_pid(directory: Path, state: Mapping[str, object] | None) -> int | None:
    pids = state.get("pids") if state else None
    if isinstance(pids, Mapping) and isinstance(pids.get("vm"), int):
        return int(pids["vm"])
    with contextlib.suppress(OSError, ValueError):
        return int((directory / PID_FILE).read_text().strip())
    return None


def read_vm(directory: Path) -> LocalVmInfo | None:
    """One VM from its directory, None when it is not a VM directory."""
    state = read_json(directory / STATE_FILE)
    spec = state or read_json(directory / SPEC_FILE)
    if spec is None:
        return None
    times = (state or {}).get("times") or {"created": spec.get("created")}
    recorded = str((state or {}).get("state") or PENDING)
    reason = (state or {}).get("reason")
    vm_pid = _vm_pid(directory, state)
    alive = _is_vm_process(vm_pid, directory)
    if recorded != TERMINATED and not alive:
        young = time.time() - float(times.get("created") or 0) < PENDING_GRACE
        if state is None and vm_pid is None and young:
            recorded = PENDING  # the process is starting and has not written state.json yet
        else:
            recorded, reason = ERROR, "the VM's process is gone but it never recorded its end"
    return LocalVmInfo(
        instance_id=str(spec.get("instance_id") or directory.name),
        dir=directory,
        state=recorded,
        batch=str(spec.get("batch") or ""),
        launch_index=int(spec.get("launch_index") or 0),
        instance_type=str(spec.get("instance_type") or "local"),
        tags=dict(spec.get("tags") or {}),
        reason=reason,
        stage=(state or {}).get("stage"),
        pids={**((state or {}).get("pids") or {}), "vm": vm_pid},
        created=times.get("created"),
        booted=times.get("booted"),
        pilot_started=times.get("pilot_started"),
        ended=times.get("ended"),
    )


def list_local_vms(base_dir: Path) -> list[LocalVmInfo]:
    """Every VM under `base_dir`, in directory name order; a dead one is `error`."""
    base_dir = Path(base_dir)
    try:
        names = sorted(os.listdir(base_dir))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.startswith("."):
            continue
        info = read_vm(base_dir / name)
        if info is not None:
            found.append(info)
    return found


def terminate_local_vm(base_dir: Path, instance_id: str, *, wait: float = 0.0) -> bool:
    """SIGTERM the VM's process group; True when it is terminating or already gone.

    With `wait` > 0, wait up to that long for the VM's process to end. A VM whose process
    died uncleanly is finished here: its bootstrap's process group is killed and its state
    recorded as terminated.
    """
    directory = Path(base_dir) / instance_id
    if "/" in instance_id or not directory.is_dir():
        return True  # unknown: nothing to terminate, as a cloud that forgot it
    state = read_json(directory / STATE_FILE)
    if state and state.get("state") == TERMINATED:
        return True
    pid = _vm_pid(directory, state)
    if _is_vm_process(pid, directory):
        assert pid is not None
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise LocalVmError(
                    f"cannot signal local instance {instance_id} (pid {pid}): {exc.strerror};"
                    " run the factory as the user that launched it"
                ) from None
        end = time.monotonic() + wait
        while time.monotonic() < end and _is_vm_process(pid, directory):
            time.sleep(0.05)
        return True
    _finish_dead(directory, state)
    return True


def _finish_dead(directory: Path, state: dict[str, object] | None) -> None:
    """Clean up after a VM process that died without recording its end."""
    pids = state.get("pids") if state else None
    bootstrap = pids.get("bootstrap") if isinstance(pids, dict) else None
    if isinstance(bootstrap, int) and str(directory / WORK_DIR) in _cmdline(bootstrap):
        with contextlib.suppress(OSError):
            os.killpg(bootstrap, signal.SIGKILL)
    record = dict(state or read_json(directory / SPEC_FILE) or {})
    times = dict(record.get("times") or {})  # type: ignore[call-overload]
    times["ended"] = int(time.time())
    record.update(
        state=TERMINATED,
        reason="terminated after its process died",
        times=times,
    )
    write_json_atomic(directory / STATE_FILE, record)


def reap_local_vms(base_dir: Path, *, older_than: float = REAP_AFTER) -> list[str]:
    """Delete the directories of VMs terminated more than `older_than` seconds ago."""
    removed = []
    cutoff = time.time() - older_than
    for info in list_local_vms(base_dir):
        if info.state == TERMINATED and (info.ended or 0) <= cutoff:
            shutil.rmtree(info.dir, ignore_errors=True)
            removed.append(info.instance_id)
    return removed


__all__ = [
    "ERROR",
    "PENDING",
    "SHUTTING_DOWN",
    "TERMINATED",
    "LocalVmError",
    "LocalVmHandle",
    "LocalVmInfo",
    "boot_local_vm",
    "host_lock",
    "list_local_vms",
    "new_instance_id",
    "read_vm",
    "reap_local_vms",
    "terminate_local_vm",
]
