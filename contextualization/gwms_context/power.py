"""Power the VM off when the glidein is done: a cloud VM that idles costs money and quota.

The command is injectable (`--poweroff-command`, tests write a marker file); the default is
`systemctl poweroff` where systemd runs the show, else `shutdown -h now`. Failing to power off
is logged loudly; the factory's lease reaper terminates the VM at its max lifetime anyway.
Stdlib only, Python 3.6.
"""

import os
import shlex
import shutil
import subprocess
from typing import List, Optional  # noqa: F401 (type comments)

from gwms_context.log import get_logger

LOG = get_logger("power")
TIMEOUT = 60.0


def default_command() -> List[str]:
    if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
        return ["systemctl", "poweroff"]
    return ["shutdown", "-h", "now"]


def power_off(command: Optional[str] = None, timeout: float = TIMEOUT) -> bool:
    """Run the power-off command; True when it exited 0."""
    argv = shlex.split(command) if command else default_command()
    LOG.warning("powering off: %s", " ".join(shlex.quote(word) for word in argv))
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOG.error(
            "power-off command failed: %s; the factory will terminate this VM at its max lifetime",
            exc,
        )
        return False
    if result.returncode != 0:
        output = result.stdout.decode("utf-8", "replace").strip().splitlines()
        LOG.error(
            "power-off command exited %d%s; the factory will terminate this VM at its max lifetime",
            result.returncode,
            (": " + output[-1]) if output else "",
        )
        return False
    return True
