"""One local "VM": a detached process tree that boots the real bootstrap against its own IMDS.

`python -m gwms.localvm.vm --dir D [--detach]` reads `D/vm.json` (written by
`gwms.localvm.runner`) and `D/user-data`, serves them from an `ImdsServer` on 127.0.0.1,
and runs `python -m gwms_context.bootstrap run --middleware ec2 ...` in `D/work` as its
child, like glidein-bootstrap.service on a cloud VM. The bootstrap's power-off command
only marks `D/powered-off`; this process then ends every process left in the tree, and
the VM is `terminated` (EC2 InstanceInitiatedShutdownBehavior=terminate). SIGTERM is
EC2's TerminateInstances: the bootstrap gets SIGTERM (it stops the pilot and ships logs),
then whatever is left after the grace period is killed. This process is a child
subreaper, so processes that escape into new sessions stay in its tree and die with it.
`D/state.json` (written atomically, only by this process once it runs) tells the
runner and the provider where the VM stands. Linux only (/proc, prctl).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import shlex
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

SPEC_FILE = "vm.json"
STATE_FILE = "state.json"
USER_DATA_FILE = "user-data"
PID_FILE = "vm.pid"
POWEROFF_MARKER = "powered-off"
CONSOLE_LOG = "console.log"
VM_LOG = "vm.log"
WORK_DIR = "work"

PENDING, RUNNING, SHUTTING_DOWN, TERMINATED = "pending", "running", "shutting-down", "terminated"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PR_SET_CHILD_SUBREAPER = 36
_POLL = 0.1


def now() -> int:
    return int(time.time())


def write_json_atomic(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    """Write `data` to a temp file, fsync, rename: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, sort_keys=True, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- the process tree ----------------------------------------------------------------------


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (from /proc/<pid>/stat)."""
    found: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        # comm may hold spaces and parentheses: the fields start after the last ')'.
        fields = raw[raw.rfind(")") + 2 :].split()
        if len(fields) > 1:
            found[int(name)] = int(fields[1])
    return found


def descendants(root: int) -> list[int]:
    """Every process below `root` (children first seen, breadth first)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    queue = list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def _kill(pid: int, sig: int, *, group: bool = False) -> None:
    with contextlib.suppress(OSError):
        (os.killpg if group else os.kill)(pid, sig)


# --- the VM --------------------------------------------------------------------------------


class LocalVm:
    """One VM's lifetime inside this process: IMDS, bootstrap, notify socket, state.json."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        spec = read_json(directory / SPEC_FILE)
        if spec is None:
            raise SystemExit(f"{directory / SPEC_FILE} is missing or not JSON; boot with runner")
        self.spec = spec
        self.stopping = False  # set by the signal handler (an Event could deadlock there)
        self._lock = threading.Lock()
        self.bootstrap: Any = None
        self.bootstrap_code: int | None = None
        created = spec.get("created") or now()
        self.state: dict[str, Any] = {
            "format": 1,
            "instance_id": spec["instance_id"],
            "batch": spec.get("batch", ""),
            "launch_index": int(spec.get("launch_index", 0)),
            "instance_type": spec.get("instance_type", "local"),
            "tags": spec.get("tags", {}),
            "state": PENDING,
            "reason": None,
            "stage": None,
            "bootstrap_exit": None,
            "imds_url": None,
            "pids": {"vm": os.getpid(), "bootstrap": None, "pilot": None},
            "times": {"created": created, "booted": None, "pilot_started": None, "ended": None},
        }

    def update(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                if key in ("pids", "times"):
                    self.state[key].update(value)
                else:
                    self.state[key] = value
            write_json_atomic(self.dir / STATE_FILE, self.state)

    def catch_signals(self) -> None:
        """SIGTERM (and SIGINT, SIGHUP) start a clean shutdown; call as early as possible."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def run(self) -> int:
        from gwms.localvm.imds import ImdsServer

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self.update()
        user_data = (self.dir / USER_DATA_FILE).read_bytes()
        imds = ImdsServer(
            instance_id=self.spec["instance_id"],
            user_data=user_data,
            instance_type=self.spec.get("instance_type", "local"),
            availability_zone="local",
            launch_index=int(self.spec.get("launch_index", 0)),
        ).start()
        notify = self._notify_socket()
        try:
            if not self.stopping:
                self._boot(imds.url, notify)
            self._shutdown(self._watch())
        finally:
            imds.stop()
            if notify is not None:
                notify[0].close()
        self.update(state=TERMINATED, times={"ended": now()})
        return 0

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _notify_socket(self) -> tuple[socket.socket, str] | None:
        """An abstract datagram socket the bootstrap reports to (systemd's NOTIFY_SOCKET)."""
        name = f"gwms-localvm-{self.spec['instance_id']}-{secrets.token_hex(6)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind("\0" + name)
        except OSError:
            sock.close()
            return None
        threading.Thread(target=self._read_notify, args=(sock,), daemon=True).start()
        return sock, "@" + name

    def _read_notify(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                return
            fields = dict(
                line.split("=", 1) for line in data.decode("utf-8", "replace").splitlines()
                if "=" in line
            )  # fmt: skip
            changes: dict[str, Any] = {}
            status = fields.get("STATUS", "")
            if status:
                changes["stage"] = status[:200]
            if fields.get("READY") == "1":
                changes["times"] = {"pilot_started": now()}
                words = status.replace("(", " ").replace(")", " ").split()
                if "pid" in words and words.index("pid") + 1 < len(words):
                    with contextlib.suppress(ValueError):
                        changes["pids"] = {"pilot": int(words[words.index("pid") + 1])}
            if changes:
                self.update(**changes)

    def _boot(self, imds_url: str, notify: tuple[socket.socket, str] | None) -> None:
        import subprocess

        spec = self.spec
        work = self.dir / WORK_DIR
        marker = self.dir / POWEROFF_MARKER
        argv = [
            spec.get("python") or sys.executable, "-m", "gwms_context.bootstrap", "run",
            "--middleware", "ec2", "--metadata-url", imds_url, "--work-dir", str(work),
            "--poweroff-command", shlex.join(["touch", str(marker)]),
            "--kill-grace", str(max(1.0, float(spec.get("grace", 10)) / 2)),
        ]  # fmt: skip
        if spec.get("pilot_user"):
            argv += ["--pilot-user", spec["pilot_user"]]
        argv += [str(a) for a in spec.get("bootstrap_args", [])]
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": str(self.dir)}
        if spec.get("pythonpath"):
            env["PYTHONPATH"] = spec["pythonpath"]
        env.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify[1]
        with (self.dir / CONSOLE_LOG).open("ab") as console:
            self.bootstrap = subprocess.Popen(
                argv,
                cwd=self.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.update(
            state=RUNNING,
            imds_url=imds_url,
            pids={"bootstrap": self.bootstrap.pid},
            times={"booted": now()},
        )

    def _reap(self) -> None:
        """Collect every exited child (ours and reparented orphans); note the bootstrap's code."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.bootstrap is not None and pid == self.bootstrap.pid:
                self.bootstrap_code = os.waitstatus_to_exitcode(status)
                self.bootstrap.returncode = self.bootstrap_code
                self.update(bootstrap_exit=self.bootstrap_code)

    def _watch(self) -> str:
        """Wait for power-off or SIGTERM; returns why the VM ends."""
        marker = self.dir / POWEROFF_MARKER
        while not self.stopping:
            time.sleep(_POLL)
            self._reap()
            if marker.exists():
                self._wait_bootstrap(2.0)
                return "powered off by the glidein"
            if self.bootstrap_code is not None and self.state["stage"] != "idle":
                # No power-off (disable_shutdown): the VM stays up, empty, like a real one.
                self.update(stage="idle")
        return "terminated by signal"

    def _wait_bootstrap(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.bootstrap is not None and self.bootstrap_code is None:
            self._reap()
            if time.monotonic() >= end:
                return
            time.sleep(0.05)

    def _shutdown(self, reason: str) -> None:
        self.update(state=SHUTTING_DOWN, reason=reason)
        if self.bootstrap is not None and self.bootstrap_code is None:
            _kill(self.bootstrap.pid, signal.SIGTERM, group=True)
            self._wait_bootstrap(float(self.spec.get("grace", 10)))
        for _ in range(20):  # whatever is left dies, like processes at a power cut
            left = descendants(os.getpid())
            if not left:
                break
            for pid in left:
                _kill(pid, signal.SIGKILL)
            time.sleep(0.05)
            self._reap()
        self._reap()


# --- entry point ---------------------------------------------------------------------------


def _detach(directory: Path) -> None:
    """Fork: the parent records the child's pid and exits; the child leads a new session."""
    pid = os.fork()
    if pid:
        (directory / f".{PID_FILE}.tmp").write_text(f"{pid}\n")
        os.replace(directory / f".{PID_FILE}.tmp", directory / PID_FILE)
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(directory / VM_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gwms.localvm.vm", description="Run one local VM from its directory."
    )
    parser.add_argument("--dir", required=True, type=Path, help="the VM's directory")
    parser.add_argument("--detach", action="store_true", help="fork into a new session first")
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    os.chdir(directory)
    if args.detach:
        _detach(directory)
    else:
        (directory / f".{PID_FILE}.tmp").write_text(f"{os.getpid()}\n")
        os.replace(directory / f".{PID_FILE}.tmp", directory / PID_FILE)
    vm = LocalVm(directory)
    vm.catch_signals()
    return vm.run()


if __name__ == "__main__":
    sys.exit(main())
