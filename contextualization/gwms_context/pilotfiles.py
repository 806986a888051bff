"""Fetch the pilot files the UserData lists from the factory's web area, each sha256-checked.

The files land in a directory the pilot can read but not change (root-owned when the
bootstrap is root), with a `manifest.sha256` in `sha256sum` format that glidein_startup.sh
re-checks. On the legacy path only glidein_startup.sh is fetched, without a hash: the old
pilot checks its other files itself through the glideinWMS signatures in its arguments.
Stdlib only, Python 3.6.
"""

import os
from typing import Dict, Optional  # noqa: F401 (type comments)

from gwms_context import factoryweb
from gwms_context.log import get_logger
from gwms_context.verify import STARTUP_SCRIPT

LOG = get_logger("pilotfiles")
MANIFEST = "manifest.sha256"


def file_url(web_base: str, name: str) -> str:
    return web_base.rstrip("/") + "/" + name


def fetch_all(
    web_base: str,
    files: Dict[str, str],
    dest_dir: str,
    timeout: float = factoryweb.DEFAULT_TIMEOUT,
    deadline: float = factoryweb.DEFAULT_DEADLINE,
) -> str:
    """Download every listed file into dest_dir; IntegrityError on the first wrong hash.

    Returns the path of the manifest written after every file checked out.
    """
    os.makedirs(dest_dir, mode=0o755, exist_ok=True)
    for name in sorted(files):
        path = os.path.join(dest_dir, name)
        factoryweb.download(
            file_url(web_base, name), path, files[name], timeout=timeout, deadline=deadline
        )
        LOG.info("fetched %s (sha256 %s)", name, files[name])
    os.chmod(os.path.join(dest_dir, STARTUP_SCRIPT), 0o755)  # noqa: S103 (a script, root-owned)
    manifest = os.path.join(dest_dir, MANIFEST)
    with open(manifest, "w") as handle:
        for name in sorted(files):
            handle.write("%s  %s\n" % (files[name], name))
    return manifest


def fetch_legacy(
    web_base: str,
    dest_dir: str,
    timeout: float = factoryweb.DEFAULT_TIMEOUT,
    deadline: float = factoryweb.DEFAULT_DEADLINE,
) -> str:
    """The legacy path: glidein_startup.sh only, no hash to check it against (logged)."""
    os.makedirs(dest_dir, mode=0o755, exist_ok=True)
    path = os.path.join(dest_dir, STARTUP_SCRIPT)
    digest = factoryweb.download(
        file_url(web_base, STARTUP_SCRIPT), path, None, timeout=timeout, deadline=deadline
    )
    os.chmod(path, 0o755)  # noqa: S103 (a script, root-owned)
    LOG.warning(
        "legacy user data: fetched %s without a hash to check (sha256 %s)", STARTUP_SCRIPT, digest
    )
    return path
