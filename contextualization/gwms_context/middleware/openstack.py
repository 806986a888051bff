"""OpenStack: user data from the config drive (label config-2) or the Nova metadata service.

The config drive wins when present: no network needed, and it is how Nova delivers data
when the metadata service is off. The service's meta_data.json is read first to make sure
the URL really is an OpenStack metadata service (user data itself is opaque bytes).
"""

import json
import os
from typing import Optional

from gwms_context.httpclient import HttpClient, HttpError
from gwms_context.log import get_logger
from gwms_context.middleware.base import (
    CONFIDENT,
    Detection,
    FetchOptions,
    MiddlewareError,
    dmi,
    find_label,
    mounted_read_only,
    read_bytes,
)

NAME = "openstack"
DEFAULT_URL = "http://169.254.169.254"
USER_DATA_PATH = "/openstack/latest/user_data"
META_DATA_PATH = "/openstack/latest/meta_data.json"
DRIVE_LABELS = ("config-2", "CONFIG-2")
# What cloud-init accepts as OpenStack in DMI (product_name, chassis_asset_tag).
PRODUCT_NAMES = ("OpenStack Nova", "OpenStack Compute")
ASSET_TAGS = (
    "OpenStack Nova",
    "OpenStack Compute",
    "OpenTelekomCloud",
    "SAP CCloud VM",
    "HUAWEICLOUD",
)

LOG = get_logger("openstack")


def detect(root: str) -> Detection:
    findings = []
    product = dmi(root, "product_name")
    if product in PRODUCT_NAMES:
        findings.append((CONFIDENT, "DMI product_name is %r" % product))
    if dmi(root, "sys_vendor") == "OpenStack Foundation":
        findings.append((CONFIDENT, "DMI sys_vendor is 'OpenStack Foundation'"))
    tag = dmi(root, "chassis_asset_tag")
    if tag in ASSET_TAGS:
        findings.append((CONFIDENT, "DMI chassis_asset_tag is %r" % tag))
    drive = find_label(root, *DRIVE_LABELS)
    if drive:
        findings.append((CONFIDENT, "config drive %s" % drive))
    return Detection.from_findings(findings)


def _attached_drive(opts: FetchOptions) -> Optional[str]:
    """The config-2 device to read, unless --metadata-url asks for the service instead."""
    if opts.metadata_url:
        return None
    return find_label(opts.root, *DRIVE_LABELS)


def fetch(opts: FetchOptions) -> Optional[bytes]:
    """User data from --config-drive DIR, else the config-2 drive, else the metadata service."""
    if opts.config_drive:
        return _user_data_from_drive(opts.config_drive)
    device = _attached_drive(opts)
    if device:
        LOG.info("reading user data from the config drive %s", device)
        with mounted_read_only(device, timeout=max(1.0, opts.deadline)) as mountpoint:
            return _user_data_from_drive(mountpoint)
    client = opts.http_client()
    base = opts.base_url(DEFAULT_URL)
    try:
        _meta_data_from_service(client, base)
        response = client.get(base + USER_DATA_PATH)
    except HttpError as exc:
        raise MiddlewareError(str(exc)) from None
    if response.status == 404:
        return None
    if response.status != 200:
        raise MiddlewareError(
            "the OpenStack metadata service at %s answered HTTP %d for user_data; "
            "check --metadata-url" % (base, response.status)
        )
    return response.body or None


def meta_data(opts: FetchOptions) -> dict:
    """The instance's meta_data.json (uuid, name, availability_zone, meta, ...).

    From the same place fetch() took the user data: a VM booted with a config drive often
    has no metadata service at all, and asking it costs the whole HTTP deadline at boot.
    """
    if opts.config_drive:
        return _meta_data_from_drive(opts.config_drive)
    device = _attached_drive(opts)
    if device:
        with mounted_read_only(device, timeout=max(1.0, opts.deadline)) as mountpoint:
            return _meta_data_from_drive(mountpoint)
    try:
        return _meta_data_from_service(opts.http_client(), opts.base_url(DEFAULT_URL))
    except HttpError as exc:
        raise MiddlewareError(str(exc)) from None


def _meta_data_from_service(client: HttpClient, base: str) -> dict:
    url = base + META_DATA_PATH
    response = client.get(url)
    if response.status != 200:
        raise MiddlewareError(
            "%s answered HTTP %d, so this is no OpenStack metadata service; check "
            "--metadata-url or pass --config-drive DIR" % (url, response.status)
        )
    return _parse_meta_data(response.body, url)


def _drive_dir(directory: str) -> str:
    latest = os.path.join(directory, "openstack", "latest")
    if not os.path.isdir(latest):
        raise MiddlewareError(
            "%s does not look like an OpenStack config drive (no openstack/latest/ in it); "
            "pass the directory where the config-2 drive is mounted" % directory
        )
    return latest


def _user_data_from_drive(directory: str) -> Optional[bytes]:
    path = os.path.join(_drive_dir(directory), "user_data")
    if not os.path.exists(path):
        return None
    return read_bytes(path, "the config drive's user data") or None


def _meta_data_from_drive(directory: str) -> dict:
    path = os.path.join(_drive_dir(directory), "meta_data.json")
    return _parse_meta_data(read_bytes(path, "the config drive's meta data"), path)


def _parse_meta_data(body: bytes, where: str) -> dict:
    try:
        document = json.loads(body.decode("utf-8"))
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("uuid"), str):
        raise MiddlewareError(
            "%s is not OpenStack meta data (a JSON object with a uuid); check --metadata-url "
            "or --config-drive" % where
        )
    return document
