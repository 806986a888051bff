"""A real unprivileged pilot user for tests that run as root, so privilege drops are real."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Iterator


@contextlib.contextmanager
def ensure_pilot_user(name: str) -> Iterator[str | None]:
    """`name` when root (created here if absent, removed after), else None: no user to drop to."""
    if os.geteuid() != 0:
        yield None
        return
    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", name], check=True
        )
        created = True
    try:
        yield name
    finally:
        if created:
            subprocess.run(["userdel", name], check=False)
