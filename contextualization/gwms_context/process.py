"""Run one child (overlay or pilot) as a given identity under a hard wall-clock limit.

The child gets its own session, so at the limit the whole process group it made is
signalled: SIGTERM, a grace period, then SIGKILL. While waiting, `on_tick` runs every
`tick` seconds in this thread (log uploads on a timer) -- no threads, because a preexec
function after fork must not meet locks held by other threads. Stdlib only, Python 3.6.
"""

import contextlib
import os
import signal
import subprocess
import time
from typing import Callable, Dict, List, Optional  # noqa: F401 (type comments)

from gwms_context.log import get_logger

LOG = get_logger("process")
DEFAULT_GRACE = 10.0


class Outcome(object):
    """How a child ended: exit code (negative: killed by that signal), timed out, duration."""

    __slots__ = ("duration", "pid", "returncode", "timed_out")

    def __init__(self, pid: int, returncode: int, timed_out: bool, duration: float) -> None:
        self.pid = pid
        self.returncode = returncode
        self.timed_out = timed_out
        self.duration = duration

    def describe(self) -> str:
        if self.timed_out:
            return "killed at its %.0f s time limit" % self.duration
        if self.returncode < 0:
            return "killed by signal %d" % -self.returncode
        return "exit code %d" % self.returncode


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, sig)


def run_limited(
    argv,  # type: List[str]
    identity,
    env,  # type: Dict[str, str]
    cwd: str,
    *,
    output,  # a file object (or a (stdout, stderr) pair) the child writes to
    limit: float,
    on_start=None,  # type: Optional[Callable[[int], None]]
    on_tick=None,  # type: Optional[Callable[[], None]]
    tick: float = 0.0,
    grace: float = DEFAULT_GRACE,
) -> Outcome:
    """Start argv as identity, wait at most `limit` seconds, then end its process group."""
    stdout, stderr = output if isinstance(output, tuple) else (output, subprocess.STDOUT)
    started = time.monotonic()
    child = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=identity.preexec(),  # noqa: PLW1509 (no threads: see the module doc)
        close_fds=True,
    )
    if on_start is not None:
        on_start(child.pid)
    try:
        timed_out = _wait(child, argv[0], started + limit, limit, on_tick, tick, grace)
    except BaseException:
        # Interrupted (SIGTERM to the bootstrap): the child must not outlive us.
        _stop(child, grace)
        raise
    # Whatever the child left behind in its session goes too.
    _signal_group(child.pid, signal.SIGKILL)
    return Outcome(child.pid, child.returncode, timed_out, time.monotonic() - started)


def _wait(child, name, end, limit, on_tick, tick, grace):  # noqa: PLR0917 (internal)
    # type: (subprocess.Popen, str, float, float, Optional[Callable[[], None]], float, float) -> bool
    """Wait for the child until `end`, calling on_tick every `tick` s; True when it timed out."""
    next_tick = time.monotonic() + tick if tick > 0 else None
    while True:
        now = time.monotonic()
        wake = end if next_tick is None else min(end, next_tick)
        try:
            child.wait(timeout=max(0.01, wake - now))
            return False
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now >= end:
            LOG.warning("%s passed its %.0f s limit; stopping it", name, limit)
            _stop(child, grace)
            return True
        if next_tick is not None and now >= next_tick:
            next_tick = now + tick
            if on_tick is not None:
                on_tick()


def _stop(child: subprocess.Popen, grace: float) -> None:
    _signal_group(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(child.pid, signal.SIGKILL)
        child.wait()
