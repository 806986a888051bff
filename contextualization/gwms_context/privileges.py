"""Who the pilot and unprivileged overlays run as, and how a child drops root before exec.

The bootstrap runs as root on a VM; the pilot and VO code run as the pilot user with no way
back (no sudo: dropping is setgroups + setgid + setuid, all irreversible). When the bootstrap
is not root (the local demo) there is nothing to drop: children run as the caller, said once
in the log. Python 3.6 has no subprocess user=/group=, hence a preexec function. Stdlib, 3.6.
"""

import contextlib
import os
import pwd
from typing import Callable, List, Optional  # noqa: F401 (type comments)

from gwms_context.log import get_logger

LOG = get_logger("privileges")


class PrivilegeError(Exception):
    """The pilot user is unusable; one sentence saying what to fix in the image."""


class Identity(object):
    """A user to run children as; `drop` False means "as the current user" (not root)."""

    __slots__ = ("drop", "gid", "groups", "home", "name", "uid")

    def __init__(self, name, uid, gid, home, groups, drop):  # noqa: PLR0917
        # type: (str, int, int, str, List[int], bool) -> None
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.groups = groups
        self.drop = drop

    def __repr__(self) -> str:
        return "Identity(%r, uid=%d, gid=%d, drop=%r)" % (self.name, self.uid, self.gid, self.drop)

    def preexec(self) -> Optional[Callable[[], None]]:
        """A preexec_fn for subprocess: new session, umask 077, then the irreversible drop."""
        drop, uid, gid, groups = self.drop, self.uid, self.gid, list(self.groups)

        def run_as() -> None:
            os.setsid()
            os.umask(0o077)
            if drop:
                os.setgroups(groups)
                os.setgid(gid)
                os.setuid(uid)

        return run_as

    def chown(self, path: str) -> None:
        """Give `path` to this identity (only when dropping; a non-root owner already owns it)."""
        if self.drop:
            os.chown(path, self.uid, self.gid)


def is_root() -> bool:
    return os.geteuid() == 0


def current() -> Identity:
    """The identity the bootstrap itself runs as (privileged overlays run like this)."""
    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:
        name, home = str(uid), os.environ.get("HOME", "/")
    return Identity(name, uid, os.getegid(), home, list(os.getgroups()), False)


def pilot_identity(name: str) -> Identity:
    """The pilot user; as non-root, the current user with one log line saying so."""
    if not is_root():
        me = current()
        LOG.warning(
            "not running as root: the pilot and overlays run as %s (uid %d), privilege "
            "dropping to %r skipped",
            me.name,
            me.uid,
            name,
        )
        return me
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(
            "the pilot user %r does not exist on this VM; create it in the image or pass "
            "--pilot-user NAME" % name
        ) from None
    if entry.pw_uid == 0:
        raise PrivilegeError(
            "the pilot user %r has uid 0; the pilot must never run as root, pick an "
            "unprivileged user with --pilot-user" % name
        )
    groups = [entry.pw_gid]
    with contextlib.suppress(OSError):
        groups = sorted(set(os.getgrouplist(name, entry.pw_gid)))
    return Identity(name, entry.pw_uid, entry.pw_gid, entry.pw_dir, groups, True)


def make_dir(path: str, owner: Optional[Identity] = None, mode: int = 0o755) -> str:
    """mkdir -p with `mode` on the last level, owned by `owner` when dropping privileges."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    if owner is not None:
        owner.chown(path)
    return path


def write_secret(path: str, data: bytes, owner: Optional[Identity] = None) -> str:
    """Write a secret to a new file created 0600 (never chmod-ed after), owned by `owner`."""
    if os.path.lexists(path):
        os.unlink(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if owner is not None and owner.drop:
            os.fchown(descriptor, owner.uid, owner.gid)
        view = memoryview(data)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path
