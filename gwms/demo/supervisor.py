"""Child processes of the demo: started in their own session, logged to files, stopped by PID.

Each child gets its own process group, so a Ctrl-C in the terminal reaches only the demo,
which then stops the children in reverse start order (SIGTERM, then SIGKILL to the group
after a grace period). Nothing is ever found or killed by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from gwms.errors import GwmsError


class ChildFailed(GwmsError):
    """A child process exited early or never became ready."""


@dataclass
class Child:
    """One supervised process: its name, argv, log file and handle."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes]
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Supervisor:
    """Starts children, checks they stay up, stops them all (reverse order) exactly once."""

    log_dir: Path
    grace: float = 15.0
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready_url: str | None = None,
        timeout: float = 30.0,
    ) -> Child:
        """Start `argv` with output in `<log_dir>/<name>.log`; wait for `ready_url` to answer."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        full_env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", **(env or {})}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
            )
        child = Child(name, list(argv), log, proc, url=ready_url)
        self.children.append(child)
        if ready_url is not None:
            wait_ready(child, ready_url, timeout)
        return child

    def check(self) -> None:
        """Raise ChildFailed if a child has exited (the demo cannot go on without it)."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                raise ChildFailed(
                    f"{child.name} exited with status {code}; see its log {child.log}"
                )

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.children}

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every child (newest first), SIGKILL its group after `grace`; exit codes."""
        codes: dict[str, int] = {}
        for child in reversed(self.children):
            codes[child.name] = stop_child(child.proc, self.grace)
        return codes


def stop_child(proc: subprocess.Popen[bytes], grace: float) -> int:
    """Stop one child by PID and then its process group; return its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Anything the child left in its own group (it was the group leader) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return int(proc.returncode)


def wait_ready(child: Child, url: str, timeout: float) -> None:
    """Poll `url` until it answers 2xx, or fail naming the child's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise ChildFailed(
                f"{child.name} exited with status {child.proc.returncode} while starting;"
                f" see its log {child.log}"
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).ok:
                return
        time.sleep(0.1)
    raise ChildFailed(f"{child.name} did not answer {url} within {timeout:.0f} s; see {child.log}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


__all__ = ["Child", "ChildFailed", "Supervisor", "pid_alive", "stop_child", "wait_until"]
