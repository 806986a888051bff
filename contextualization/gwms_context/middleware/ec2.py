"""EC2 and EC2 clones: user data from the instance metadata service (IMDS).

IMDSv2 first: PUT a session token (TTL header), send it on every GET, get a new one on 401.
When the PUT is refused (403/404/405) or unanswered, fall back to IMDSv1 plain GETs, which
is what EC2 clones (OpenNebula's, Eucalyptus) serve. A 404 on user-data means "none".
"""

import json
from typing import Optional

from gwms_context.httpclient import HttpClient, HttpError, HttpTimeout
from gwms_context.log import get_logger
from gwms_context.middleware.base import (
    CONFIDENT,
    WEAK,
    Detection,
    FetchOptions,
    MiddlewareError,
    dmi,
    read_text,
)

NAME = "ec2"
DEFAULT_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"  # noqa: S105 (a URL path, not a secret)
USER_DATA_PATH = "/latest/user-data"
SPOT_ACTION_PATH = "/latest/meta-data/spot/instance-action"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 (a header name)
TOKEN_TTL = 21600
# Token refusals that mean "this service has no IMDSv2": EC2 with IMDS off (403), clones (404/405).
_NO_V2_STATUSES = (403, 404, 405)
_MAX_TOKEN_REFRESHES = 2
_MAX_TOKEN_LENGTH = 1024

LOG = get_logger("ec2")


def detect(root: str) -> Detection:
    findings = []
    for key in ("sys_vendor", "bios_vendor", "product_name", "board_vendor"):
        value = dmi(root, key)
        if value.lower().startswith("amazon ec2"):
            findings.append((CONFIDENT, "DMI %s is %r" % (key, value)))
    bios_version = dmi(root, "bios_version")
    if "amazon" in bios_version.lower():
        findings.append((CONFIDENT, "DMI bios_version is %r (Xen on EC2)" % bios_version))
    # A random UUID starts with "ec2" once in 4096: alone, only a hint.
    uuid = dmi(root, "product_uuid") or read_text(root, "sys/hypervisor/uuid")
    if uuid.lower().startswith("ec2"):
        findings.append((WEAK, "the instance UUID starts with 'ec2'"))
    return Detection.from_findings(findings)


class Imds(object):
    """A session with one IMDS: keeps the token, refreshes it on 401, remembers v1 fallback."""

    def __init__(
        self, client: HttpClient, base_url: str = DEFAULT_URL, ttl: int = TOKEN_TTL
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl
        self.token = None  # type: Optional[str]
        self.version = None  # type: Optional[int]  # 2 or 1 once known

    def get(self, path: str) -> Optional[bytes]:
        """Body of GET path, or None on 404."""
        url = self.base_url + path
        refreshes = 0
        while True:
            if self.version is None:
                self._open_session()
            headers = {TOKEN_HEADER: self.token} if self.version == 2 else {}
            response = self.client.get(url, headers)
            if response.status == 200:
                return response.body
            if response.status == 404:
                return None
            if response.status == 401 and refreshes < _MAX_TOKEN_REFRESHES:
                # Expired or unknown token; in v1 mode, the service now wants IMDSv2 after all.
                LOG.info("IMDS answered 401 to %s; getting a new session token", path)
                refreshes += 1
                self.version = None
                self.token = None
                continue
            raise MiddlewareError(self._refusal(url, response.status))

    def _open_session(self) -> None:
        url = self.base_url + TOKEN_PATH
        try:
            response = self.client.request(
                "PUT", url, headers={TTL_HEADER: str(self.ttl)}, data=b"", retry_timeouts=False
            )
        except HttpTimeout:
            LOG.info("IMDS token request timed out; falling back to IMDSv1")
            self.version = 1
            return
        if response.status in _NO_V2_STATUSES:
            LOG.info("IMDS refused a session token (HTTP %d); using IMDSv1", response.status)
            self.version = 1
            return
        if response.status != 200:
            raise MiddlewareError(
                "the metadata service at %s answered HTTP %d to the IMDSv2 token request; "
                "check --metadata-url" % (url, response.status)
            )
        token = response.body.strip()
        if not token or len(token) > _MAX_TOKEN_LENGTH or not _printable_ascii(token):
            raise MiddlewareError(
                "the metadata service at %s returned an unusable IMDSv2 token (%d bytes); "
                "it is not an EC2 metadata service, check --metadata-url" % (url, len(token))
            )
        self.token = token.decode("ascii")
        self.version = 2

    def _refusal(self, url: str, status: int) -> str:
        if status == 401 and self.version == 1:
            return (
                "the metadata service at %s requires an IMDSv2 session token (HTTP 401) but "
                "refused to issue one; check the instance's metadata options" % url
            )
        if status == 401:
            return (
                "the metadata service at %s keeps refusing our IMDSv2 session token (HTTP 401); "
                "check the instance's metadata options (http-tokens, hop limit)" % url
            )
        if status == 403:
            return (
                "the metadata service at %s answered HTTP 403; instance metadata may be "
                "disabled for this instance (enable http-endpoint)" % url
            )
        return "the metadata service at %s answered HTTP %d; check --metadata-url" % (url, status)


def _printable_ascii(data: bytes) -> bool:
    return all(0x21 <= byte <= 0x7E for byte in data)


def _session(opts: FetchOptions) -> Imds:
    return Imds(opts.http_client(), opts.base_url(DEFAULT_URL))


def fetch(opts: FetchOptions) -> Optional[bytes]:
    """Raw user data from IMDS (served as-is; EC2's base64 is only on the API side)."""
    if opts.config_drive:
        LOG.warning("--config-drive is ignored by the ec2 middleware")
    try:
        body = _session(opts).get(USER_DATA_PATH)
    except HttpError as exc:
        raise MiddlewareError(str(exc)) from None
    return body or None


def spot_instance_action(opts: FetchOptions) -> Optional[dict]:
    """The pending spot interruption ({"action": ..., "time": ...}), or None when none (404)."""
    try:
        body = _session(opts).get(SPOT_ACTION_PATH)
    except HttpError as exc:
        raise MiddlewareError(str(exc)) from None
    if body is None:
        return None
    try:
        notice = json.loads(body.decode("utf-8"))
    except ValueError:
        notice = None
    if (
        not isinstance(notice, dict)
        or notice.get("action") not in ("hibernate", "stop", "terminate")
        or not isinstance(notice.get("time"), str)
    ):
        raise MiddlewareError(
            "the metadata service at %s returned a spot instance-action that is not "
            '{"action": "terminate|stop|hibernate", "time": ...}; check --metadata-url'
            % (opts.base_url(DEFAULT_URL) + SPOT_ACTION_PATH)
        )
    return notice
