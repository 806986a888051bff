"""OpenStack (Nova) through openstacksdk.

One `launch` is one create-server call with `min_count`/`max_count` (MinCount 1 by
default, like EC2, so a project near its quota still gets what fits). The batch's servers
are named `gwms-<factory>-<batch id>` (Nova appends `-<i>`, i from 1, when it makes more
than one) and carry the gwms:* keys as server metadata. Nova has no client tokens, so a
create whose outcome is unknown is settled by looking the batch up by name and metadata
before any retry. Listings page with `limit`/`marker` under a name regex; terminate is one
DELETE per server (Nova has no batch delete), each one token of the endpoint's bucket
(default 500 requests per 300 s). openstacksdk's own retries are off: `retry.Retrier`
decides, and `calls` counts the API requests made, per API.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import openstack
from keystoneauth1 import exceptions as ksa_exceptions
from openstack import exceptions as sdk_exceptions
from openstack.config import OpenStackConfig
from openstack.connection import Connection

from gwms.config.factory import (
    OpenStackAppCredential,
    OpenStackCloud,
    OpenStackCloudsYaml,
    OpenStackFromFrontend,
)
from gwms.credentials.model import OpenStackAppCredential as FrontendAppCredential
from gwms.errors import CredentialError
from gwms.factory.providers.base import (
    TAG_BATCH,
    TAG_CLIENT,
    TAG_ENTRY,
    TAG_FACTORY,
    Instance,
    InstanceState,
    LaunchRequest,
    ProviderError,
    TerminateResult,
    ThrottledError,
)
from gwms.factory.providers.metered import MeteredProvider
from gwms.factory.ratelimit import RateLimiter
from gwms.factory.retry import Retrier

log = logging.getLogger(__name__)
T = TypeVar("T")

USERDATA_LIMIT = 65_535  # characters of base64 Nova accepts
PAGE_SIZE = 1_000  # Nova's default osapi_max_limit
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_UUID = re.compile(r"\A[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\Z")

STATES = {
    "BUILD": InstanceState.PENDING,
    "REBUILD": InstanceState.PENDING,
    "ACTIVE": InstanceState.RUNNING,
    "REBOOT": InstanceState.RUNNING,
    "HARD_REBOOT": InstanceState.RUNNING,
    "DELETED": InstanceState.TERMINATED,
    "SOFT_DELETED": InstanceState.TERMINATED,
    # Nova keeps a powered-off glidein as SHUTOFF: not capacity, the factory deletes it.
    "SHUTOFF": InstanceState.ERROR,
    "ERROR": InstanceState.ERROR,
}

# --- errors --------------------------------------------------------------------------------------


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "status_code", None) or getattr(exc, "http_status", None) or 0)


def is_throttle(exc: BaseException) -> bool:
    """Nova or its load balancer said slow down (HTTP 429)."""
    return _status(exc) == 429


def is_retryable(exc: BaseException) -> bool:
    """Throttling, 5xx and connection trouble are worth another try; the rest is not."""
    if isinstance(exc, sdk_exceptions.HttpException | ksa_exceptions.HttpError):
        return _status(exc) in RETRY_STATUSES
    return isinstance(exc, ksa_exceptions.ConnectionError)


def outcome_unknown(exc: BaseException) -> bool:
    """Anything retryable but a 429 may have reached Nova: look before creating again."""
    return is_retryable(exc) and not is_throttle(exc)


# --- credentials ---------------------------------------------------------------------------------


def read_app_credential_file(path: Path) -> tuple[str, str]:
    """(id, secret) from a 0600 file of `KEY=value` or `key: value` lines.

    Keys are `application_credential_id` and `application_credential_secret`, optionally
    as the `OS_APPLICATION_CREDENTIAL_*` variables of an openrc file (`export` allowed).
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise CredentialError(
            f"cannot read OpenStack application credential file {path} ({exc.strerror});"
            " check the cloud's credentials.file"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(
            f"OpenStack application credential file {path} is open to other users (mode"
            f" {stat.S_IMODE(mode):04o}); run chmod 600 {path}"
        )
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip().removeprefix("export ").strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=") if "=" in line else line.partition(":")
        if sep:
            name = key.strip().lower().removeprefix("os_")
            values[name] = value.strip().strip("'\"")
    cred_id = values.get("application_credential_id", "")
    secret = values.get("application_credential_secret", "")
    if not cred_id or not secret:
        raise CredentialError(
            f"OpenStack application credential file {path} lacks application_credential_id"
            " or application_credential_secret; add both (KEY=value lines)"
        )
    return cred_id, secret


def connect(cloud: OpenStackCloud, credential: FrontendAppCredential | None = None) -> Connection:
    """An openstacksdk connection for the cloud, with the SDK's own retries off."""
    settings: dict[str, Any] = {"connect_retries": 0, "status_code_retries": 0, "api_timeout": 60}
    if cloud.region:
        settings["region_name"] = cloud.region
    creds = cloud.credentials
    if isinstance(creds, OpenStackCloudsYaml):
        if creds.file is None:
            config = OpenStackConfig()
        else:
            if not Path(creds.file).is_file():
                raise CredentialError(
                    f"clouds.yaml {creds.file} does not exist; fix the cloud's credentials.file"
                )
            config = OpenStackConfig(config_files=[str(creds.file)], load_envvars=False)
        try:
            region = config.get_one(cloud=creds.cloud, **settings)
        except sdk_exceptions.ConfigException as exc:
            raise CredentialError(
                f"cloud {creds.cloud} not usable from clouds.yaml ({exc}); check the cloud's"
                " credentials.cloud and file"
            ) from None
        return Connection(config=region)
    if isinstance(creds, OpenStackAppCredential):
        cred_id, secret = read_app_credential_file(Path(creds.file))
        auth_url = creds.auth_url
    else:
        assert isinstance(creds, OpenStackFromFrontend)
        if credential is None:
            raise CredentialError(
                f"cloud {cloud.name} takes its credentials from the frontend, but none was"
                " given; pass the frontend's OpenStack application credential"
            )
        cred_id = credential.app_credential_id
        secret = credential.app_credential_secret.get_secret_value()
        auth_url = credential.auth_url or creds.auth_url
        if credential.region and "region_name" not in settings:
            settings["region_name"] = credential.region
    return openstack.connect(
        auth_type="v3applicationcredential",
        auth={
            "auth_url": auth_url,
            "application_credential_id": cred_id,
            "application_credential_secret": secret,
        },
        load_yaml_config=False,
        load_envvars=False,
        **settings,
    )


# --- the provider --------------------------------------------------------------------------------


class OpenStackProvider(MeteredProvider):
    """The `Provider` for one OpenStack region."""

    def __init__(
        self,
        cloud: OpenStackCloud,
        *,
        factory: str,
        credential: FrontendAppCredential | None = None,
        connection: Connection | None = None,
        limiter: RateLimiter | None = None,
        retrier: Retrier | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        page_size: int = PAGE_SIZE,
        max_wait: float = 120.0,
        all_or_nothing: bool = False,
    ) -> None:
        """`credential` is the frontend's, for clouds whose credentials are `from_frontend`.

        `max_wait` bounds the seconds one operation spends waiting for tokens and backing off.
        """
        super().__init__(
            cloud,
            factory=factory,
            retryable=is_retryable,
            limiter=limiter,
            retrier=retrier,
            clock=clock,
            sleep=sleep,
            rand=rand,
            page_size=page_size,
            max_wait=max_wait,
            all_or_nothing=all_or_nothing,
        )
        self.conn = connection or connect(cloud, credential)
        self._flavors: dict[str, str] = {}
        self._images: dict[str, str] = {}
        self._networks: dict[str, str] = {}

    # --- one call: tokens, retries, error mapping ---

    def _log_retry(self, api: str, attempt: int, exc: BaseException, wait: float) -> None:
        log.warning(
            "cloud %s: OpenStack %s failed (%s); retry %d of %d in %.2f s",
            self.name, api, _reason(exc), attempt, self.retrier.policy.attempts - 1, wait,
        )  # fmt: skip

    def _attempt(self, api: str, fn: Callable[[], T], deadline: float) -> T:
        self.limiter.acquire({"api": 1}, deadline)
        self._count(api)
        return fn()

    def _call(self, api: str, fn: Callable[[], T], deadline: float) -> T:
        try:
            return self.retrier.call(
                lambda: self._attempt(api, fn, deadline), api=api, deadline=deadline
            )
        except (sdk_exceptions.SDKException, ksa_exceptions.ClientException) as exc:
            raise self._error(api, exc) from exc

    def _error(self, api: str, exc: BaseException) -> ProviderError:
        if is_throttle(exc) or _status(exc) == 503:
            return ThrottledError(
                f"OpenStack {api} on cloud {self.name} is still refused ({_reason(exc)}) after"
                f" {self.retrier.policy.attempts} tries; retry later"
            )
        if isinstance(exc, ksa_exceptions.Unauthorized) or _status(exc) in (401, 403):
            return ProviderError(
                f"OpenStack {api} on cloud {self.name} was refused ({_reason(exc)}); check the"
                " cloud's credentials, their role and the project quota"
            )
        return ProviderError(f"OpenStack {api} on cloud {self.name} failed: {_reason(exc)}")

    # --- lookups, cached: flavors, images and networks rarely change ---

    def _flavor_id(self, name_or_id: str, deadline: float) -> str:
        if name_or_id not in self._flavors:
            flavor = self._call(
                "find_flavor", lambda: _find(self.conn.compute.find_flavor, name_or_id), deadline
            )
            if flavor is None:
                raise ProviderError(
                    f"flavor {name_or_id} not found on cloud {self.name}; fix the entry's"
                    " instance_types"
                )
            self._flavors[name_or_id] = flavor.id
        return self._flavors[name_or_id]

    def _image_id(self, name_or_id: str, deadline: float) -> str:
        if _UUID.match(name_or_id):
            return name_or_id
        if name_or_id not in self._images:
            image = self._call(
                "find_image", lambda: _find(self.conn.image.find_image, name_or_id), deadline
            )
            if image is None:
                raise ProviderError(
                    f"image {name_or_id} not found on cloud {self.name}; fix the entry's image"
                )
            self._images[name_or_id] = image.id
        return self._images[name_or_id]

    def _network_id(self, name_or_id: str, deadline: float) -> str:
        if _UUID.match(name_or_id):
            return name_or_id
        if name_or_id not in self._networks:
            network = self._call(
                "find_network", lambda: _find(self.conn.network.find_network, name_or_id), deadline
            )
            if network is None:
                raise ProviderError(
                    f"network {name_or_id} not found on cloud {self.name}; fix the entry's network"
                )
            self._networks[name_or_id] = network.id
        return self._networks[name_or_id]

    # --- the Provider interface ---

    def batch_name(self, batch_id: str) -> str:
        return f"gwms-{self.factory}-{batch_id}"

    def launch(self, request: LaunchRequest) -> list[Instance]:
        """One create for the batch, then one listing of it; unknown outcomes are looked up."""
        if request.count < 1:
            raise ProviderError(
                f"batch {request.batch_id}: count must be >= 1, got {request.count}"
            )
        encoded = base64.b64encode(request.userdata).decode("ascii")
        if len(encoded) > USERDATA_LIMIT:
            raise ProviderError(
                f"batch {request.batch_id}: UserData is {len(encoded)} characters of base64,"
                f" Nova takes at most {USERDATA_LIMIT}; drop overlays or pilot arguments"
            )
        deadline = self._deadline()
        attrs = self._create_attrs(request, encoded, deadline)
        unknown = False

        def attempt() -> list[Instance] | None:
            nonlocal unknown
            if unknown:
                found = self.find_batch(self.factory, request.batch_id)
                if found:
                    log.info(
                        "cloud %s: batch %s was created after all", self.name, request.batch_id
                    )
                    return found
            try:
                self._attempt(
                    "create_server", lambda: self.conn.compute.create_server(**attrs), deadline
                )
            except Exception as exc:
                unknown = unknown or outcome_unknown(exc)
                raise
            return None

        try:
            found = self.retrier.call(attempt, api="create_server", deadline=deadline)
        except (sdk_exceptions.SDKException, ksa_exceptions.ClientException) as exc:
            error = self._error("create_server", exc)
            if unknown:
                error = ProviderError(
                    f"{error}; batch {request.batch_id} may exist, look it up before launching"
                    " again"
                )
            raise error from exc
        instances = found if found is not None else self.find_batch(self.factory, request.batch_id)
        log.info(
            "cloud %s: batch %s: %d of %d servers created",
            self.name, request.batch_id, len(instances), request.count,
        )  # fmt: skip
        return instances

    def _create_attrs(
        self, request: LaunchRequest, encoded: str, deadline: float
    ) -> dict[str, Any]:
        options = request.options
        metadata = {
            **{key: str(value) for key, value in request.tags.items()},
            TAG_FACTORY: self.factory,
            TAG_ENTRY: request.entry,
            TAG_CLIENT: request.client,
            TAG_BATCH: request.batch_id,
        }
        network = options.get("network")
        attrs: dict[str, Any] = {
            "name": self.batch_name(request.batch_id),
            "image_id": self._image_id(request.image, deadline),
            "flavor_id": self._flavor_id(request.instance_type, deadline),
            "user_data": encoded,
            "metadata": metadata,
            "min_count": request.count if self.all_or_nothing else 1,
            "max_count": request.count,
            "networks": [{"uuid": self._network_id(str(network), deadline)}] if network else "auto",
        }
        if options.get("key_name"):
            attrs["key_name"] = str(options["key_name"])
        groups = options.get("security_groups")
        if groups:
            names = [groups] if isinstance(groups, str) else groups
            if isinstance(names, Iterable):
                attrs["security_groups"] = [{"name": str(name)} for name in names]
        if options.get("availability_zone"):
            attrs["availability_zone"] = str(options["availability_zone"])
        return attrs

    def list(self, factory: str, entry: str | None = None) -> list[Instance]:
        """Live servers of `factory` (and `entry`): one paginated listing under a name regex."""
        wanted = {TAG_FACTORY: factory}
        if entry is not None:
            wanted[TAG_ENTRY] = entry
        return list(self._servers(f"^gwms-{re.escape(factory)}-", wanted))

    def find_batch(self, factory: str, batch_id: str) -> list[Instance]:
        """The servers of one batch, by name and metadata, in launch-index order."""
        pattern = f"^gwms-{re.escape(factory)}-{re.escape(batch_id)}(-[0-9]+)?$"
        found = self._servers(pattern, {TAG_FACTORY: factory, TAG_BATCH: batch_id})
        return sorted(found, key=lambda i: i.launch_index)

    def _servers(self, name_regex: str, wanted: Mapping[str, str]) -> Iterator[Instance]:
        deadline = self._deadline()
        marker: str | None = None
        while True:
            query: dict[str, Any] = {"name": name_regex, "limit": self.page_size}
            if marker:
                query["marker"] = marker
            page = self._call(
                "list_servers",
                lambda query=query: list(
                    self.conn.compute.servers(details=True, paginated=False, **query)
                ),
                deadline,
            )
            for server in page:
                metadata = server.metadata or {}
                if all(metadata.get(key) == value for key, value in wanted.items()):
                    yield self._instance(server)
            if len(page) < self.page_size:
                return
            marker = page[-1].id

    def terminate(self, cloud_ids: Sequence[str]) -> TerminateResult:
        """One DELETE per server, each taking a token; servers already gone count as accepted.

        A server Nova refuses (locked, conflicting task) or a delete that fails for good is
        reported in `failed`; once the rate bucket cannot serve the rest before the
        operation's deadline, the rest are reported as throttled for the next cycle.
        """
        deadline = self._deadline()
        accepted: list[str] = []
        failed: dict[str, str] = {}
        for cloud_id in dict.fromkeys(cloud_ids):
            try:
                self._call(
                    "delete_server",
                    lambda cloud_id=cloud_id: self.conn.compute.delete_server(
                        cloud_id, ignore_missing=True
                    ),
                    deadline,
                )
            except ProviderError as exc:
                failed[cloud_id] = str(exc)
                continue
            accepted.append(cloud_id)
        return TerminateResult(accepted=tuple(accepted), failed=failed)

    # --- records ---

    def _instance(self, server: Any) -> Instance:
        metadata = server.metadata or {}
        status = str(server.status or "").upper()
        state = STATES.get(status, InstanceState.ERROR)
        if str(server.task_state or "").lower() == "deleting" and state != InstanceState.TERMINATED:
            state = InstanceState.TERMINATING
        return Instance(
            cloud_id=server.id,
            batch_id=metadata.get(TAG_BATCH, ""),
            launch_index=_launch_index(server),
            state=state,
            entry=metadata.get(TAG_ENTRY, ""),
            client=metadata.get(TAG_CLIENT, ""),
            launched_at=_when(server.launched_at or server.created_at),
            instance_type=_flavor_name(server.flavor),
            address=_address(server),
        )


def _find(finder: Callable[..., Any], name_or_id: str) -> Any:
    """A find_* result, or None when it does not exist (without the SDK's deprecated default)."""
    try:
        return finder(name_or_id, ignore_missing=False)
    except sdk_exceptions.NotFoundException:
        return None


def _launch_index(server: Any) -> int:
    """`OS-EXT-SRV-ATTR:launch_index` where policy shows it, else from Nova's `-<i>` suffix."""
    if server.launch_index is not None:
        return int(server.launch_index)
    metadata = server.metadata or {}
    base = f"gwms-{metadata.get(TAG_FACTORY, '')}-{metadata.get(TAG_BATCH, '')}"
    suffix = str(server.name or "").removeprefix(base + "-")
    return int(suffix) - 1 if suffix.isdigit() and int(suffix) > 0 else 0


def _when(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _flavor_name(flavor: Any) -> str | None:
    if flavor is None:
        return None
    for key in ("original_name", "name", "id"):
        value = getattr(flavor, key, None) if not isinstance(flavor, dict) else flavor.get(key)
        if value:
            return str(value)
    return None


def _address(server: Any) -> str | None:
    if server.access_ipv4:
        return str(server.access_ipv4)
    floating = fixed = None
    for entries in (server.addresses or {}).values():
        for entry in entries:
            if entry.get("OS-EXT-IPS:type") == "floating":
                floating = floating or entry.get("addr")
            else:
                fixed = fixed or entry.get("addr")
    return floating or fixed


def _reason(exc: BaseException) -> str:
    status = _status(exc)
    text = str(getattr(exc, "details", None) or getattr(exc, "message", None) or exc)
    text = " ".join(text.split())[:300]
    return f"HTTP {status}: {text}" if status else f"{type(exc).__name__}: {text}"


__all__ = [
    "OpenStackProvider",
    "connect",
    "is_retryable",
    "is_throttle",
    "outcome_unknown",
    "read_app_credential_file",
]
