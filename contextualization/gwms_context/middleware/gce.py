"""Google Compute Engine: user data from the `user-data` instance attribute.

Every request carries ``Metadata-Flavor: Google`` and every answer must carry it back;
an answer without it comes from something that is not the GCE metadata server, and is
refused. The optional ``user-data-encoding`` attribute (``base64``) is honoured as
cloud-init does, since metadata values are text.
"""

import base64
import binascii
from typing import Optional

from gwms_context.httpclient import HttpClient, HttpError, Response
from gwms_context.log import get_logger
from gwms_context.middleware.base import (
    CONFIDENT,
    Detection,
    FetchOptions,
    MiddlewareError,
    dmi,
)

NAME = "gce"
DEFAULT_URL = "http://169.254.169.254"
ATTRIBUTES_PATH = "/computeMetadata/v1/instance/attributes/"
USER_DATA_KEY = "user-data"
ENCODING_KEY = "user-data-encoding"
FLAVOR_HEADER = "Metadata-Flavor"
FLAVOR = "Google"

LOG = get_logger("gce")


def detect(root: str) -> Detection:
    findings = []
    for key in ("product_name", "sys_vendor", "bios_vendor", "board_vendor"):
        value = dmi(root, key)
        if value.startswith("Google"):
            findings.append((CONFIDENT, "DMI %s is %r" % (key, value)))
    return Detection.from_findings(findings)


def fetch(opts: FetchOptions) -> Optional[bytes]:
    if opts.config_drive:
        LOG.warning("--config-drive is ignored by the gce middleware")
    client = opts.http_client()
    base = opts.base_url(DEFAULT_URL) + ATTRIBUTES_PATH
    try:
        body = _attribute(client, base + USER_DATA_KEY)
        if body is None:
            return None
        encoding = _attribute(client, base + ENCODING_KEY)
    except HttpError as exc:
        raise MiddlewareError(str(exc)) from None
    if encoding is not None and encoding.strip().lower() == b"base64":
        try:
            body = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise MiddlewareError(
                "the GCE user-data attribute is declared base64 (user-data-encoding) but is not "
                "valid base64; fix the instance metadata"
            ) from None
    elif encoding is not None and encoding.strip():
        raise MiddlewareError(
            "the GCE user-data-encoding attribute is %r, which gwms does not know; use base64 "
            "or remove it" % encoding.strip().decode("ascii", "replace")
        )
    return body or None


def _attribute(client: HttpClient, url: str) -> Optional[bytes]:
    response = client.get(url, {FLAVOR_HEADER: FLAVOR})
    _check_flavor(response)
    if response.status == 404:
        return None
    if response.status != 200:
        raise MiddlewareError(
            "the GCE metadata server answered HTTP %d for %s; check --metadata-url"
            % (response.status, url)
        )
    return response.body


def _check_flavor(response: Response) -> None:
    if (response.header(FLAVOR_HEADER) or "").strip() != FLAVOR:
        raise MiddlewareError(
            "%s answered without the 'Metadata-Flavor: Google' header, so it is not the GCE "
            "metadata server; refusing its answer (check --metadata-url)" % response.url
        )
