"""VO overlays: download, sha256 check, unpack, run time-limited, as the pilot user by default.

An overlay is either one script (run with its #! line, else /bin/sh) or a tarball whose top
level holds an executable `overlay.sh`. It runs in its own directory with GWMS_* variables
set; its output goes to `overlay-<name>.log` in the logs directory (shipped to the factory).
Root only when the overlay is `privileged` AND the UserData says `allow_privileged_overlays`;
a privileged overlay the entry does not allow runs unprivileged, with a warning. Any
failure (download, hash, unpack, non-zero exit, time limit) stops the glidein. Stdlib, 3.6.
"""

import os
import tarfile
from typing import Dict, List, Optional  # noqa: F401 (type comments)

from gwms_context import factoryweb, privileges, process
from gwms_context.log import get_logger

LOG = get_logger("overlays")
DEFAULT_TIMEOUT = 300.0
ENTRY_POINT = "overlay.sh"


class OverlayError(Exception):
    """An overlay could not run or failed; the glidein stops."""


def _safe_members(archive: tarfile.TarFile, name: str) -> List[tarfile.TarInfo]:
    """Refuse absolute paths, '..', links leaving the tree, devices; strip set-id bits."""
    members = []
    for member in archive.getmembers():
        parts = member.name.replace("\\", "/").split("/")
        bad = member.name.startswith("/") or ".." in parts
        if member.issym() or member.islnk():
            target = member.linkname
            if member.issym():
                target = os.path.normpath(os.path.join(os.path.dirname(member.name), target))
            bad = bad or target.startswith("/") or target.split("/")[0] == ".."
        bad = bad or not (member.isfile() or member.isdir() or member.issym() or member.islnk())
        if bad:
            raise OverlayError(
                "overlay %s: the tarball member %r points outside the overlay or is a device; "
                "the VO must rebuild the tarball with relative paths" % (name, member.name)
            )
        member.mode &= 0o755  # no set-id bits, nothing group- or world-writable
        member.uid, member.gid = os.getuid(), os.getgid()
        member.uname = member.gname = ""
        members.append(member)
    return members


def _unpack(path: str, tree: str, name: str) -> str:
    os.makedirs(tree, mode=0o755, exist_ok=True)
    try:
        with tarfile.open(path) as archive:
            archive.extractall(  # noqa: S202 (members checked by _safe_members)
                tree, members=_safe_members(archive, name), numeric_owner=True
            )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OverlayError(
            "overlay %s: cannot unpack the tarball (%s); the VO must publish a valid tar.gz"
            % (name, exc)
        ) from None
    entry = os.path.join(tree, ENTRY_POINT)
    if not os.path.isfile(entry):
        raise OverlayError(
            "overlay %s: the tarball has no %s at its top level; add one, it is what runs"
            % (name, ENTRY_POINT)
        )
    return entry


def _chown_tree(top: str, identity: privileges.Identity) -> None:
    if not identity.drop:
        return
    for directory, dirs, files in os.walk(top):
        identity.chown(directory)
        for item in dirs + files:
            path = os.path.join(directory, item)
            if not os.path.islink(path):
                identity.chown(path)


def _command(script: str) -> List[str]:
    with open(script, "rb") as handle:
        shebang = handle.read(2) == b"#!"
    os.chmod(script, 0o755)  # noqa: S103 (a script; only its owner may write it)
    return [script] if shebang else ["/bin/sh", script]


def run_one(
    overlay: dict,
    allow_privileged: bool,
    *,
    overlays_dir: str,
    logs_dir: str,
    pilot: privileges.Identity,
    env: Dict[str, str],
    timeout: float = DEFAULT_TIMEOUT,
    on_tick=None,
    tick: float = 0.0,
) -> None:
    name = overlay["name"]
    if overlay.get("privileged") and allow_privileged:
        identity = privileges.current()
        LOG.warning("overlay %s runs privileged, as %s", name, identity.name)
    else:
        identity = pilot
        if overlay.get("privileged"):
            LOG.warning(
                "overlay %s asks for root but this entry does not allow privileged overlays; "
                "running it as %s",
                name,
                pilot.name,
            )
    home = os.path.join(overlays_dir, name)
    privileges.make_dir(home, mode=0o755)
    download = os.path.join(home, name + ".download")
    try:
        factoryweb.download(overlay["url"], download, overlay["sha256"])
    except factoryweb.WebError as exc:
        raise OverlayError("overlay %s: %s" % (name, exc)) from None
    if tarfile.is_tarfile(download):
        script = _unpack(download, os.path.join(home, "tree"), name)
    else:
        script = os.path.join(home, name)
        os.replace(download, script)
    _chown_tree(home, identity)
    log_path = os.path.join(logs_dir, "overlay-%s.log" % name)
    child_env = dict(env)
    child_env.update(
        GWMS_OVERLAY_NAME=name,
        GWMS_OVERLAY_DIR=os.path.dirname(script),
        HOME=identity.home,
        USER=identity.name,
        LOGNAME=identity.name,
    )
    LOG.info("running overlay %s as %s (limit %.0f s)", name, identity.name, timeout)
    with open(log_path, "ab") as log:
        outcome = process.run_limited(
            _command(script),
            identity,
            child_env,
            os.path.dirname(script),
            output=log,
            limit=timeout,
            on_tick=on_tick,
            tick=tick,
        )
    if outcome.timed_out or outcome.returncode != 0:
        raise OverlayError(
            "overlay %s failed (%s); the pilot will not start, see overlay-%s.log%s"
            % (name, outcome.describe(), name, _last_line(log_path))
        )
    LOG.info("overlay %s done in %.1f s", name, outcome.duration)


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 2048))
            lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return " (last line: %s)" % lines[-1][:200] if lines else ""


def run_all(overlays, allow_privileged, **options) -> None:
    """Run every overlay in order (options: those of run_one); the first failure raises."""
    for overlay in overlays or []:
        run_one(overlay, allow_privileged, **options)
