"""NoCloud (cloud-init's seed format): a `user-data` file on a `cidata` disk or in a seed dir.

Used by plain qemu/libvirt VMs (our image tests boot one with a seed ISO). Sources, first
found wins: --config-drive DIR, --metadata-url URL (nocloud-net: URL/user-data), the disk
labelled cidata, then cloud-init's seed directories.
"""

import os
from typing import Optional

from gwms_context.httpclient import HttpError
from gwms_context.log import get_logger
from gwms_context.middleware.base import (
    CONFIDENT,
    Detection,
    FetchOptions,
    MiddlewareError,
    find_label,
    in_root,
    mounted_read_only,
    read_bytes,
    read_text,
)

NAME = "nocloud"
SEED_LABELS = ("cidata", "CIDATA")
SEED_DIRS = ("var/lib/cloud/seed/nocloud", "var/lib/cloud/seed/nocloud-net")
USER_DATA_FILE = "user-data"

LOG = get_logger("nocloud")


def detect(root: str) -> Detection:
    findings = []
    seed = find_label(root, *SEED_LABELS)
    if seed:
        findings.append((CONFIDENT, "NoCloud seed disk %s" % seed))
    for directory in SEED_DIRS:
        if os.path.exists(os.path.join(in_root(root, directory), USER_DATA_FILE)):
            findings.append((CONFIDENT, "NoCloud seed directory /%s" % directory))
    if any(word.startswith("ds=nocloud") for word in read_text(root, "proc/cmdline").split()):
        findings.append((CONFIDENT, "ds=nocloud on the kernel command line"))
    return Detection.from_findings(findings)


def fetch(opts: FetchOptions) -> Optional[bytes]:
    if opts.config_drive:
        return _from_dir(opts.config_drive)
    if opts.metadata_url:
        return _from_url(opts)
    device = find_label(opts.root, *SEED_LABELS)
    if device:
        LOG.info("reading user data from the NoCloud seed disk %s", device)
        with mounted_read_only(device, timeout=max(1.0, opts.deadline)) as mountpoint:
            return _from_dir(mountpoint)
    for directory in SEED_DIRS:
        seed = in_root(opts.root, directory)
        if os.path.isdir(seed):
            return _from_dir(seed)
    raise MiddlewareError(
        "no NoCloud seed under %s (no disk labelled cidata, no %s); attach a seed or pass "
        "--config-drive DIR" % (opts.root, " or ".join("/" + d for d in SEED_DIRS))
    )


def _from_dir(directory: str) -> Optional[bytes]:
    if not os.path.isdir(directory):
        raise MiddlewareError(
            "the NoCloud seed %s is not a directory; pass the directory holding user-data"
            % directory
        )
    path = os.path.join(directory, USER_DATA_FILE)
    if not os.path.exists(path):
        return None
    return read_bytes(path, "NoCloud user data") or None


def _from_url(opts: FetchOptions) -> Optional[bytes]:
    url = opts.base_url("") + "/" + USER_DATA_FILE
    try:
        response = opts.http_client().get(url)
    except HttpError as exc:
        raise MiddlewareError(str(exc)) from None
    if response.status == 404:
        return None
    if response.status != 200:
        raise MiddlewareError(
            "the NoCloud seed server answered HTTP %d for %s; check --metadata-url"
            % (response.status, url)
        )
    return response.body or None
