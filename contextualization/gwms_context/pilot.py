"""Start glidein_startup.sh as the pilot user under a hard wall-clock limit (lifetimes.max_seconds).

The pilot gets a clean environment (nothing from the bootstrap's, which may hold secrets),
its arguments from the UserData after the ones the bootstrap sets, stdout and stderr in the
logs directory, and no way to regain root. Legacy pilots get exactly their glideinWMS
arguments plus X509_USER_PROXY. Stdlib only, Python 3.6.
"""

import os
import sys
from typing import Dict, List, Optional  # noqa: F401 (type comments)

from gwms_context import process
from gwms_context.log import get_logger
from gwms_context.verify import STARTUP_SCRIPT

LOG = get_logger("pilot")
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PilotPlan(object):
    """Everything needed to start the pilot: argv, environment, directory, limit."""

    __slots__ = ("argv", "cwd", "env", "limit")

    def __init__(self, argv, env, cwd, limit):
        # type: (List[str], Dict[str, str], str, float) -> None
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.limit = limit


def pilot_env(identity, glidein_id: str, proxy: str, work_dir: str, path: str = SAFE_PATH):
    # type: (object, str, str, str, str) -> Dict[str, str]
    return {
        "PATH": path,
        "HOME": identity.home,
        "USER": identity.name,
        "LOGNAME": identity.name,
        "LANG": "C",
        "TMPDIR": os.path.join(work_dir, "tmp"),
        "X509_USER_PROXY": proxy,
        "GLIDEIN_ID": glidein_id,
        # The stand-in startd needs a Python; the bootstrap's own is known to work here.
        "GWMS_PYTHON": sys.executable or "python3",
    }


def plan(
    userdata,
    identity,
    *,
    glidein_id,
    files_dir,
    manifest,
    work_dir,
    proxy,
    idtoken,
    summary,
    path=SAFE_PATH,
):
    # type: (object, object, str, str, Optional[str], str, str, Optional[str], str, str) -> PilotPlan
    """The command line and environment of glidein_startup.sh for this glidein."""
    script = os.path.join(files_dir, STARTUP_SCRIPT)
    env = pilot_env(identity, glidein_id, proxy, work_dir, path)
    if userdata.legacy:
        return PilotPlan(
            [script] + list(userdata.pilot_args or []), env, work_dir, userdata.max_seconds
        )
    argv = [
        script,
        "-web", userdata.web_base,
        "-manifest", manifest or "",
        "-files-dir", files_dir,
        "-id", glidein_id,
        "-factory", userdata.factory,
        "-entry", userdata.entry,
        "-clientname", userdata.client,
        "-dir", work_dir,
        "-proxy", proxy,
        "-lifetime", str(userdata.max_seconds),
        "-retire", str(userdata.retire_seconds),
        "-summary", summary,
    ]  # fmt: skip
    if idtoken:
        argv += ["-idtoken", idtoken]
    return PilotPlan(argv + list(userdata.pilot_args or []), env, work_dir, userdata.max_seconds)


def run(
    pilot_plan,
    identity,
    logs_dir,
    *,
    on_start=None,
    on_tick=None,
    tick=0.0,
    grace=process.DEFAULT_GRACE,
):
    # type: (PilotPlan, object, str, object, object, float, float) -> process.Outcome
    """Run the pilot to its end or its limit; stdout/stderr go to pilot.out / pilot.err."""
    out = open(os.path.join(logs_dir, "pilot.out"), "ab")  # noqa: SIM115 (3.6: no parenthesized with)
    with out, open(os.path.join(logs_dir, "pilot.err"), "ab") as err:
        return process.run_limited(
            pilot_plan.argv,
            identity,
            pilot_plan.env,
            pilot_plan.cwd,
            output=(out, err),
            limit=pilot_plan.limit,
            on_start=on_start,
            on_tick=on_tick,
            tick=tick,
            grace=grace,
        )
