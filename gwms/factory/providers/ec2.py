"""EC2 (and EC2-compatible clouds: OpenNebula, Eucalyptus) through boto3.

One `launch` is one RunInstances call for the whole batch: MinCount=1, MaxCount=count,
as AWS recommends, so a short-of-capacity zone still gives what it has
(`all_or_nothing=True` sends MinCount=count instead; moto launches exactly MinCount).
VMs are tagged at creation (instance and volume TagSpecifications), shut down into
`terminated` (InstanceInitiatedShutdownBehavior), and carry the journaled ClientToken.
Before a RunInstances whose outcome is unknown is retried, the batch is looked up by its
`gwms:batch` tag, so idempotency does not rest on the ClientToken alone (moto ignores it).

Every call first takes its tokens from the cloud's rate buckets (DESIGN.md §6), then goes
through `retry.Retrier` (throttling and 5xx back off with full jitter); botocore's own
retries are off so there is one retry policy. `calls` counts HTTP requests per API.
"""

from __future__ import annotations

import configparser
import logging
import random
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    CredentialProvider,
    CredentialResolver,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from gwms.config.factory import Ec2Cloud, Ec2DefaultChain, Ec2KeyPair, Ec2Role, FromFrontend
from gwms.credentials.model import AwsKeyPairCredential, AwsRoleCredential
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

USERDATA_LIMIT = 16_384  # raw bytes EC2 accepts (before base64)
TERMINATE_BATCH = 1_000  # instance ids per TerminateInstances call
PAGE_SIZE = 1_000  # DescribeInstances MaxResults (EC2 allows 5..1000)

THROTTLE_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
    }
)
SERVER_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})
ID_CODES = frozenset(
    {"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed", "OperationNotPermitted"}
)

STATES = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "shutting-down": InstanceState.TERMINATING,
    "terminated": InstanceState.TERMINATED,
    # A glidein VM never stops on purpose (it shuts down into terminated): a stopped one is
    # not capacity, the factory should terminate it.
    "stopping": InstanceState.ERROR,
    "stopped": InstanceState.ERROR,
}
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]

FrontendAwsCredential = AwsKeyPairCredential | AwsRoleCredential

# --- errors --------------------------------------------------------------------------------------


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_throttle(exc: BaseException) -> bool:
    """EC2 said slow down: RequestLimitExceeded and friends, or HTTP 429."""
    return isinstance(exc, ClientError) and (_code(exc) in THROTTLE_CODES or _status(exc) == 429)


def is_retryable(exc: BaseException) -> bool:
    """Throttling, HTTP 5xx, and connection trouble are worth another try; the rest is not."""
    if isinstance(exc, ClientError):
        return is_throttle(exc) or _code(exc) in SERVER_CODES or _status(exc) >= 500
    return isinstance(
        exc,
        EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError,
    )


def outcome_unknown(exc: BaseException) -> bool:
    """The request may have been carried out: a lost answer or a server error, not throttling."""
    if isinstance(exc, ReadTimeoutError | ConnectionClosedError):
        return True
    return isinstance(exc, ClientError) and not is_throttle(exc) and is_retryable(exc)


# --- credentials ---------------------------------------------------------------------------------


def read_key_pair_file(path: Path) -> tuple[str, str, str | None]:
    """(access key id, secret, session token) from an AWS shared-credentials file kept 0600."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise CredentialError(
            f"cannot read AWS key pair file {path} ({exc.strerror}); check the cloud's"
            " credentials.file"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(
            f"AWS key pair file {path} is open to other users (mode {stat.S_IMODE(mode):04o});"
            f" run chmod 600 {path}"
        )
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error:
        raise CredentialError(
            f"AWS key pair file {path} is not in shared-credentials (INI) format; write"
            " [default] with aws_access_key_id and aws_secret_access_key"
        ) from None
    sections = parser.sections()
    name = "default" if "default" in sections else (sections[0] if len(sections) == 1 else None)
    section = parser[name] if name else {}
    key_id = section.get("aws_access_key_id", "").strip()
    secret = section.get("aws_secret_access_key", "").strip()
    if not key_id or not secret:
        raise CredentialError(
            f"AWS key pair file {path} has no [default] section with aws_access_key_id and"
            " aws_secret_access_key; add them"
        )
    token = section.get("aws_session_token", "").strip() or None
    return key_id, secret, token


class _FixedProvider(CredentialProvider):
    """Hands botocore one credentials object (here: refreshable assumed-role credentials)."""

    METHOD = "gwms-assume-role"

    def __init__(self, credentials: DeferredRefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> DeferredRefreshableCredentials:
        return self._credentials


# --- the provider --------------------------------------------------------------------------------


class Ec2Provider(MeteredProvider):
    """The `Provider` for one EC2 region or EC2-compatible endpoint."""

    def __init__(
        self,
        cloud: Ec2Cloud,
        *,
        factory: str,
        credential: FrontendAwsCredential | None = None,
        limiter: RateLimiter | None = None,
        retrier: Retrier | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sts_endpoint_url: str | None = None,
        page_size: int = PAGE_SIZE,
        max_wait: float = 120.0,
        all_or_nothing: bool = False,
    ) -> None:
        """`credential` is the frontend's, for clouds whose credentials are `from_frontend`.

        `max_wait` bounds the seconds one operation spends waiting for tokens and backing
        off. STS is reached at `sts_endpoint_url`, else at the cloud's `endpoint_url`.
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
        self._wallclock = wallclock
        self._config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="gwms-cloud",
        )
        self._sts_endpoint = sts_endpoint_url or cloud.endpoint_url
        session = self._session(credential)
        self.client = session.client(
            "ec2", region_name=cloud.region, endpoint_url=cloud.endpoint_url, config=self._config
        )

    # --- sessions and credentials ---

    def _session(self, credential: FrontendAwsCredential | None) -> boto3.Session:
        creds = self.cloud.credentials
        region = self.cloud.region
        if isinstance(creds, FromFrontend):
            if credential is None:
                raise CredentialError(
                    f"cloud {self.name} takes its credentials from the frontend, but none was"
                    " given; pass the frontend's AWS credential"
                )
            if isinstance(credential, AwsKeyPairCredential):
                return boto3.Session(
                    aws_access_key_id=credential.access_key_id,
                    aws_secret_access_key=credential.secret_access_key.get_secret_value(),
                    region_name=region,
                )
            external = credential.external_id
            return self._assumed(
                boto3.Session(region_name=region),
                credential.role_arn,
                external.get_secret_value() if external else None,
                credential.session_duration_seconds,
            )
        if isinstance(creds, Ec2KeyPair):
            return self._key_pair_session(creds.file)
        if isinstance(creds, Ec2Role):
            source = (
                self._key_pair_session(creds.source_file)
                if creds.source_file
                else boto3.Session(region_name=region)
            )
            return self._assumed(source, creds.role_arn, None, 3600)
        assert isinstance(creds, Ec2DefaultChain)
        return boto3.Session(region_name=region)

    def _key_pair_session(self, path: Path) -> boto3.Session:
        key_id, secret, token = read_key_pair_file(Path(path))
        return boto3.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            region_name=self.cloud.region,
        )

    def _assumed(
        self, source: boto3.Session, role_arn: str, external_id: str | None, duration: int
    ) -> boto3.Session:
        """A session on a role's short-lived credentials, re-assumed before they expire."""
        sts = source.client(
            "sts",
            region_name=self.cloud.region,
            endpoint_url=self._sts_endpoint,
            config=self._config,
        )
        params: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": f"gwms-{self.factory}"[:64],
            "DurationSeconds": duration,
        }
        if external_id:
            params["ExternalId"] = external_id

        def refresh() -> dict[str, str]:
            deadline = self._clock() + self.max_wait
            answer = self._call("AssumeRole", {}, lambda: sts.assume_role(**params), deadline)
            found = answer["Credentials"]
            log.info("cloud %s: assumed role %s until %s", self.name, role_arn, found["Expiration"])
            return {
                "access_key": found["AccessKeyId"],
                "secret_key": found["SecretAccessKey"],
                "token": found["SessionToken"],
                "expiry_time": found["Expiration"].isoformat(),
            }

        credentials = DeferredRefreshableCredentials(
            refresh_using=refresh, method=_FixedProvider.METHOD, time_fetcher=self._wallclock
        )
        core = botocore.session.Session()
        core.register_component(
            "credential_provider", CredentialResolver([_FixedProvider(credentials)])
        )
        return boto3.Session(botocore_session=core, region_name=self.cloud.region)

    # --- one call: tokens, retries, error mapping ---

    def _log_retry(self, api: str, attempt: int, exc: BaseException, wait: float) -> None:
        reason = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        log.warning(
            "cloud %s: EC2 %s failed (%s); retry %d of %d in %.2f s",
            self.name, api, reason, attempt, self.retrier.policy.attempts - 1, wait,
        )  # fmt: skip

    def _call(
        self, api: str, costs: Mapping[str, float], fn: Callable[[], T], deadline: float
    ) -> T:
        def attempt() -> T:
            self.limiter.acquire(costs, deadline)
            self._count(api)
            return fn()

        try:
            return self.retrier.call(attempt, api=api, deadline=deadline)
        except ClientError as exc:
            raise self._error(api, exc) from exc
        except NoCredentialsError as exc:
            raise ProviderError(
                f"no AWS credentials found for cloud {self.name}; set its credentials in the"
                " factory configuration"
            ) from exc
        except BotoCoreError as exc:
            raise ProviderError(
                f"EC2 {api} on cloud {self.name} failed: {exc}; check the endpoint and network"
            ) from exc

    def _error(self, api: str, exc: ClientError) -> ProviderError:
        code = _code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if is_throttle(exc) or _status(exc) == 503:
            return ThrottledError(
                f"EC2 {api} on cloud {self.name} is still throttled ({code or 'HTTP 503'})"
                f" after {self.retrier.policy.attempts} tries; retry later"
            )
        if code in {"AuthFailure", "UnauthorizedOperation"} or code.startswith(
            "InvalidClientToken"
        ):
            return ProviderError(
                f"EC2 {api} on cloud {self.name} was refused ({code}: {message}); check the"
                " cloud's credentials and their permissions"
            )
        return ProviderError(f"EC2 {api} on cloud {self.name} failed: {code}: {message}")

    # --- the Provider interface ---

    def launch(self, request: LaunchRequest) -> list[Instance]:
        """One RunInstances for the batch; an unknown outcome is settled by tag before retrying."""
        if request.count < 1:
            raise ProviderError(
                f"batch {request.batch_id}: count must be >= 1, got {request.count}"
            )
        if len(request.userdata) > USERDATA_LIMIT:
            raise ProviderError(
                f"batch {request.batch_id}: UserData is {len(request.userdata)} bytes, EC2 takes"
                f" at most {USERDATA_LIMIT}; drop overlays or pilot arguments"
            )
        params = self._run_params(request)
        costs = {"run_instances": 1, "run_instances_instances": request.count}
        deadline = self._deadline()
        unknown = False

        def attempt() -> list[Instance]:
            nonlocal unknown
            if unknown:
                found = self.find_batch(self.factory, request.batch_id)
                if found:
                    log.info(
                        "cloud %s: batch %s was launched after all", self.name, request.batch_id
                    )
                    return found
            self.limiter.acquire(costs, deadline)
            self._count("RunInstances")
            try:
                answer = self.client.run_instances(**params)
            except Exception as exc:
                unknown = unknown or outcome_unknown(exc)
                raise
            return [self._instance(raw, request) for raw in answer.get("Instances", [])]

        try:
            instances = self.retrier.call(attempt, api="RunInstances", deadline=deadline)
        except ClientError as exc:
            raise self._error("RunInstances", exc) from exc
        except BotoCoreError as exc:
            raise ProviderError(
                f"EC2 RunInstances on cloud {self.name} failed ({exc}); batch"
                f" {request.batch_id} may exist, look it up by tag before launching again"
            ) from exc
        log.info(
            "cloud %s: batch %s: %d of %d instances launched",
            self.name, request.batch_id, len(instances), request.count,
        )  # fmt: skip
        return sorted(instances, key=lambda i: i.launch_index)

    def _run_params(self, request: LaunchRequest) -> dict[str, Any]:
        tags = {
            "Name": f"gwms-{self.factory}-{request.batch_id}",
            **request.tags,
            TAG_FACTORY: self.factory,
            TAG_ENTRY: request.entry,
            TAG_CLIENT: request.client,
            TAG_BATCH: request.batch_id,
        }
        tag_list = [{"Key": key, "Value": value} for key, value in tags.items()]
        params: dict[str, Any] = {
            "ImageId": request.image,
            "InstanceType": request.instance_type,
            "MinCount": request.count if self.all_or_nothing else 1,
            "MaxCount": request.count,
            "ClientToken": request.client_token,
            "UserData": request.userdata,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
        }
        params.update(_option_params(request.options))
        return params

    def list(self, factory: str, entry: str | None = None) -> list[Instance]:
        """Live instances tagged by `factory` (and `entry`): one paginated DescribeInstances."""
        filters = [
            {"Name": f"tag:{TAG_FACTORY}", "Values": [factory]},
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ]
        if entry is not None:
            filters.append({"Name": f"tag:{TAG_ENTRY}", "Values": [entry]})
        return list(self._describe(filters))

    def find_batch(self, factory: str, batch_id: str) -> list[Instance]:
        """Every instance of the batch in any state (terminated ones too, while EC2 lists them)."""
        filters = [
            {"Name": f"tag:{TAG_FACTORY}", "Values": [factory]},
            {"Name": f"tag:{TAG_BATCH}", "Values": [batch_id]},
        ]
        return sorted(self._describe(filters), key=lambda i: i.launch_index)

    def _describe(self, filters: list[dict[str, Any]]) -> Iterator[Instance]:
        deadline = self._deadline()
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Filters": filters, "MaxResults": self.page_size}
            if token:
                params["NextToken"] = token
            page = self._call(
                "DescribeInstances",
                {"describe": 1},
                lambda params=params: self.client.describe_instances(**params),
                deadline,
            )
            for reservation in page.get("Reservations", []):
                for raw in reservation.get("Instances", []):
                    yield self._instance(raw)
            token = page.get("NextToken")
            if not token:
                return

    def terminate(self, cloud_ids: Sequence[str]) -> TerminateResult:
        """TerminateInstances in chunks of up to 1,000 ids.

        EC2 refuses a whole call for one bad id; the ids its error names are set aside and
        the rest retried. Ids EC2 no longer knows count as accepted: they are gone, which is
        what terminate asks for. Ids it refuses (malformed, termination protection) or
        calls that fail for good are reported in `failed` with the cloud's reason.
        """
        ids = list(dict.fromkeys(cloud_ids))
        bucket = self.limiter.buckets.get("terminate_instances")
        size = min(TERMINATE_BATCH, int(bucket.capacity) if bucket else TERMINATE_BATCH)
        accepted: list[str] = []
        failed: dict[str, str] = {}
        for start in range(0, len(ids), size):
            self._terminate_chunk(ids[start : start + size], accepted, failed)
        return TerminateResult(accepted=tuple(accepted), failed=failed)

    def _terminate_chunk(
        self, chunk: list[str], accepted: list[str], failed: dict[str, str]
    ) -> None:
        pending = list(chunk)
        deadline = self._deadline()
        while pending:
            costs = {"terminate_instances": len(pending), "mutating": 1}
            try:
                answer = self._call(
                    "TerminateInstances",
                    costs,
                    lambda ids=tuple(pending): self.client.terminate_instances(
                        InstanceIds=list(ids)
                    ),
                    deadline,
                )
            except ProviderError as exc:
                cause = exc.__cause__
                named = _named_ids(cause, pending) if isinstance(cause, ClientError) else []
                if not named:
                    failed.update(dict.fromkeys(pending, str(exc)))
                    return
                assert isinstance(cause, ClientError)
                for cloud_id in named:
                    if _code(cause) == "InvalidInstanceID.NotFound":
                        accepted.append(cloud_id)
                    else:
                        failed[cloud_id] = (
                            f"{_code(cause)}: {cause.response['Error'].get('Message')}"
                        )
                pending = [i for i in pending if i not in named]
                continue
            done = [item["InstanceId"] for item in answer.get("TerminatingInstances", [])]
            accepted.extend(done)
            missing = [i for i in pending if i not in set(done)]
            failed.update(dict.fromkeys(missing, "not in EC2's TerminateInstances answer"))
            return

    # --- records ---

    def _instance(self, raw: Mapping[str, Any], request: LaunchRequest | None = None) -> Instance:
        tags = {tag["Key"]: tag["Value"] for tag in raw.get("Tags", []) or []}
        state = STATES.get(raw.get("State", {}).get("Name", ""), InstanceState.ERROR)
        return Instance(
            cloud_id=raw["InstanceId"],
            batch_id=tags.get(TAG_BATCH) or (request.batch_id if request else ""),
            launch_index=int(raw.get("AmiLaunchIndex", 0)),
            state=state,
            entry=tags.get(TAG_ENTRY) or (request.entry if request else ""),
            client=tags.get(TAG_CLIENT) or (request.client if request else ""),
            launched_at=raw.get("LaunchTime"),
            instance_type=raw.get("InstanceType"),
            address=raw.get("PublicIpAddress") or raw.get("PrivateIpAddress"),
        )


def _option_params(options: Mapping[str, object]) -> dict[str, Any]:
    """RunInstances parameters from an entry's options (key_name, network, spot, ...).

    `security_groups` are ids when they all start with `sg-`, else names (default VPC only).
    `spot` is a mapping with an optional `max_price` (USD per hour); one-time, terminate.
    """
    params: dict[str, Any] = {}
    if options.get("key_name"):
        params["KeyName"] = str(options["key_name"])
    if options.get("network"):
        params["SubnetId"] = str(options["network"])
    groups = _strings(options.get("security_groups"))
    if groups:
        key = "SecurityGroupIds" if all(g.startswith("sg-") for g in groups) else "SecurityGroups"
        params[key] = groups
    if options.get("availability_zone"):
        params["Placement"] = {"AvailabilityZone": str(options["availability_zone"])}
    spot = options.get("spot")
    if spot:
        spot_options: dict[str, Any] = {
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate",
        }
        max_price = spot.get("max_price") if isinstance(spot, Mapping) else None
        if max_price is not None:
            spot_options["MaxPrice"] = f"{float(max_price):g}"
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot_options}
    return params


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value] if isinstance(value, Iterable) else []


def _named_ids(exc: ClientError, pending: Sequence[str]) -> list[str]:
    """The pending ids an id-specific EC2 error names in its message."""
    if _code(exc) not in ID_CODES:
        return []
    words = set(re.findall(r"[\w.-]+", str(exc.response.get("Error", {}).get("Message", ""))))
    return [cloud_id for cloud_id in pending if cloud_id in words]


__all__ = ["Ec2Provider", "is_retryable", "is_throttle", "outcome_unknown", "read_key_pair_file"]
