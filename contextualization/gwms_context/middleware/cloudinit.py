"""Reuse the user data cloud-init already fetched on this VM.

cloud-init stores the raw user data (after its datasource's transport decoding, before
any gzip/MIME processing) in /var/lib/cloud/instance/user-data.txt, readable by root only.
That file survives reboots and image captures, so it only counts as confident evidence
when cloud-init is active on *this* boot (its /run/cloud-init directory exists: /run is
emptied at every boot); otherwise it may be stale data from the image build.
"""

import os
from typing import Optional

from gwms_context.log import get_logger
from gwms_context.middleware.base import (
    CONFIDENT,
    WEAK,
    Detection,
    FetchOptions,
    MiddlewareError,
    in_root,
    read_bytes,
)

NAME = "cloudinit"
USER_DATA_FILE = "var/lib/cloud/instance/user-data.txt"
RUN_DIR = "run/cloud-init"

LOG = get_logger("cloudinit")


def detect(root: str) -> Detection:
    if not os.path.exists(in_root(root, USER_DATA_FILE)):
        return Detection()
    if os.path.isdir(in_root(root, RUN_DIR)):
        return Detection(CONFIDENT, ["cloud-init ran on this boot and left /%s" % USER_DATA_FILE])
    return Detection(
        WEAK,
        [
            "/%s exists but cloud-init did not run on this boot (no /%s): maybe stale"
            % (USER_DATA_FILE, RUN_DIR)
        ],
    )


def fetch(opts: FetchOptions) -> Optional[bytes]:
    """The stored user data; --config-drive DIR points at another cloud-init instance dir."""
    if opts.metadata_url:
        LOG.warning("--metadata-url is ignored by the cloudinit middleware")
    if opts.config_drive:
        path = os.path.join(opts.config_drive, os.path.basename(USER_DATA_FILE))
    else:
        path = in_root(opts.root, USER_DATA_FILE)
    if not os.path.exists(path):
        raise MiddlewareError(
            "%s does not exist, so cloud-init has not fetched user data on this VM; wait for "
            "cloud-init (order the service after cloud-init.service) or choose another "
            "--middleware" % path
        )
    # cloud-init writes an empty file when the cloud had no user data.
    return read_bytes(path, "cloud-init's user data") or None
