"""The EC2 provider against a real moto_server over HTTP, with a faulty proxy in front.

The provider runs on a fake clock (its sleeps advance it), so backoff and rate-limit waits
cost no wall time while the HTTP traffic, the moto cloud and boto3 are all real.
"""

from __future__ import annotations

import base64
import gzip
import logging
import os
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from gwms.config.common import TokenBucket
from gwms.config.factory import Ec2Cloud, Ec2RateLimits, Entry
from gwms.credentials.model import AwsKeyPairCredential
from gwms.errors import CredentialError
from gwms.factory.providers.base import (
    TAG_BATCH,
    TAG_CLIENT,
    TAG_ENTRY,
    TAG_FACTORY,
    InstanceState,
    LaunchRequest,
    ProviderError,
    ThrottledError,
)
from gwms.factory.providers.ec2 import Ec2Provider
from gwms.factory.providers.registry import build_provider, entry_options
from tests.fakes.faulty_proxy import (
    Fault,
    FaultyProxy,
    ec2_error_body,
    faulty_proxy,
    form,
    throttle,
    unavailable,
)
from tests.fakes.moto_server import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    MotoServer,
    moto,  # noqa: F401 - fixture
    moto_server,  # noqa: F401 - fixture
    write_key_pair_file,
)

pytestmark = pytest.mark.integration

FACTORY = "gfactory-test"
IMAGE = "ami-03cf127a"  # one of moto's stock AMIs
ROLE_ARN = "arn:aws:iam::123456789012:role/gwms-factory"


class FakeClock:
    """Monotonic time that advances only when the provider sleeps."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultyProxy]:  # noqa: F811 - fixture
    with faulty_proxy(moto.url) as started:
        yield started


@pytest.fixture
def ec2(moto: MotoServer) -> Any:  # noqa: F811 - fixture
    """A plain boto3 client straight to moto: the test's own view of the cloud."""
    return boto3.client(
        "ec2",
        endpoint_url=moto.url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key_pair_file(tmp_path / "aws-credentials")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


ProviderFactory = Callable[..., Ec2Provider]


@pytest.fixture
def make_provider(proxy: FaultyProxy, key_file: Path, clock: FakeClock) -> ProviderFactory:
    def make(cloud: dict[str, Any] | None = None, **kwargs: Any) -> Ec2Provider:
        settings: dict[str, Any] = {
            "name": "aws-test",
            "type": "ec2",
            "region": REGION,
            "endpoint_url": proxy.url,
            "credentials": {"type": "key_pair", "file": str(key_file)},
            "retries": {"attempts": 6, "initial_backoff": 1, "max_backoff": 8},
            **(cloud or {}),
        }
        options = {"clock": clock, "sleep": clock.sleep, "rand": random.Random(3).random}
        options.update(kwargs)
        return Ec2Provider(Ec2Cloud(**settings), factory=FACTORY, **options)

    return make


def userdata() -> bytes:
    """Gzip-compressed bytes, like UserData v1: binary, NULs and all."""
    return gzip.compress(random.Random(11).randbytes(3000) + b"\x00\xff glidein", mtime=0)


def request(batch: str, count: int = 3, **kwargs: Any) -> LaunchRequest:
    values: dict[str, Any] = {
        "batch_id": batch,
        "count": count,
        "entry": "ec2_us_east_1",
        "client": "vo1-frontend.main",
        "image": IMAGE,
        "instance_type": "t3.micro",
        "userdata": userdata(),
        "client_token": f"tok-{batch}",
    }
    values.update(kwargs)
    return LaunchRequest(**values)


def tags_of(ec2: Any, instance_id: str) -> dict[str, str]:
    found = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [instance_id]}])
    return {tag["Key"]: tag["Value"] for tag in found["Tags"]}


def live_ids(ec2: Any) -> set[str]:
    answer = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )
    return {i["InstanceId"] for r in answer["Reservations"] for i in r["Instances"]}


# --- launch ---------------------------------------------------------------------------------------


def test_a_batch_of_three_is_one_run_instances_call_with_tags_and_userdata_byte_for_byte(
    make_provider: ProviderFactory, proxy: FaultyProxy, ec2: Any
) -> None:
    provider = make_provider(all_or_nothing=True)  # moto launches exactly MinCount
    launched = provider.launch(request("gl-b1", tags={"site": "ucsd"}))

    assert [i.launch_index for i in launched] == [0, 1, 2]
    assert [i.glidein_id for i in launched] == ["gl-b1.0", "gl-b1.1", "gl-b1.2"]
    assert {(i.batch_id, i.entry, i.client) for i in launched} == {
        ("gl-b1", "ec2_us_east_1", "vo1-frontend.main")
    }
    assert provider.calls["RunInstances"] == 1
    assert proxy.forwarded["RunInstances"] == 1
    for instance in launched:
        tags = tags_of(ec2, instance.cloud_id)
        assert tags[TAG_FACTORY] == FACTORY
        assert tags[TAG_ENTRY] == "ec2_us_east_1"
        assert tags[TAG_CLIENT] == "vo1-frontend.main"
        assert tags[TAG_BATCH] == "gl-b1"
        assert tags["site"] == "ucsd"
        attribute = ec2.describe_instance_attribute(
            InstanceId=instance.cloud_id, Attribute="userData"
        )
        assert base64.b64decode(attribute["UserData"]["Value"]) == userdata()
    volumes = ec2.describe_volumes(Filters=[{"Name": f"tag:{TAG_BATCH}", "Values": ["gl-b1"]}])
    assert len(volumes["Volumes"]) == 3
    sent = form(next(s for s in proxy.seen if s.action == "RunInstances"))
    assert sent["ClientToken"] == "tok-gl-b1"
    assert sent["InstanceInitiatedShutdownBehavior"] == "terminate"


def test_by_default_a_launch_takes_partial_capacity_min_one_max_count(
    make_provider: ProviderFactory, proxy: FaultyProxy
) -> None:
    launched = make_provider().launch(request("gl-partial", count=4))
    sent = form(next(s for s in proxy.seen if s.action == "RunInstances"))
    assert (sent["MinCount"], sent["MaxCount"]) == ("1", "4")
    assert 1 <= len(launched) <= 4  # moto gives MinCount; AWS as many as it can


def test_entry_options_launch_spot_instances_with_key_subnet_groups_and_zone(
    make_provider: ProviderFactory, proxy: FaultyProxy, ec2: Any
) -> None:
    ec2.create_key_pair(KeyName="gwms-ops")
    subnet = ec2.describe_subnets()["Subnets"][0]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    entry = Entry(
        name="ec2_us_east_1",
        cloud="aws-test",
        image=IMAGE,
        instance_types=["t3.micro"],
        spot={"max_price": 0.05},
        key_name="gwms-ops",
        network=subnet["SubnetId"],
        security_groups=[group],
        availability_zone=subnet["AvailabilityZone"],
    )
    provider = make_provider(all_or_nothing=True)
    [instance] = provider.launch(request("gl-spot", count=1, options=entry_options(entry)))

    raw = ec2.describe_instances(InstanceIds=[instance.cloud_id])["Reservations"][0]["Instances"][0]
    assert raw["InstanceLifecycle"] == "spot"
    assert raw["KeyName"] == "gwms-ops"
    assert raw["SubnetId"] == subnet["SubnetId"]
    assert [g["GroupId"] for g in raw["SecurityGroups"]] == [group]
    assert raw["Placement"]["AvailabilityZone"] == subnet["AvailabilityZone"]
    sent = form(next(s for s in proxy.seen if s.action == "RunInstances"))
    assert sent["InstanceMarketOptions.SpotOptions.MaxPrice"] == "0.05"
    assert sent["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"


def test_userdata_over_the_ec2_limit_fails_before_any_call(
    make_provider: ProviderFactory, proxy: FaultyProxy
) -> None:
    with pytest.raises(ProviderError, match="UserData is 16385 bytes, EC2 takes at most 16384"):
        make_provider().launch(request("gl-big", userdata=b"x" * 16385))
    assert proxy.seen == []


# --- list and find_batch --------------------------------------------------------------------------


def test_list_pages_through_more_instances_than_a_page_with_one_call_per_page(
    make_provider: ProviderFactory, ec2: Any
) -> None:
    provider = make_provider(all_or_nothing=True, page_size=5)
    for n in range(7):
        provider.launch(request(f"gl-p{n}", count=2))
    provider.launch(request("gl-other-entry", count=2, entry="openstack_x"))
    other = make_provider(all_or_nothing=True)
    other.factory = "another-factory"
    other.launch(request("gl-foreign", count=2))
    gone = provider.launch(request("gl-gone", count=2))
    provider.terminate([i.cloud_id for i in gone])
    provider.calls.clear()

    listed = provider.list(FACTORY, entry="ec2_us_east_1")

    assert len(listed) == 14
    assert {i.batch_id for i in listed} == {f"gl-p{n}" for n in range(7)}
    assert all(i.state in {InstanceState.PENDING, InstanceState.RUNNING} for i in listed)
    assert provider.calls["DescribeInstances"] == 2  # 7 reservations, 5 per page
    assert len(provider.list(FACTORY)) == 16


def test_find_batch_returns_one_batch_in_launch_order_terminated_members_included(
    make_provider: ProviderFactory,
) -> None:
    provider = make_provider(all_or_nothing=True)
    batch = provider.launch(request("gl-fb", count=3))
    provider.launch(request("gl-fb-neighbour", count=2))
    provider.terminate([batch[1].cloud_id])

    found = provider.find_batch(FACTORY, "gl-fb")

    assert [i.cloud_id for i in found] == [i.cloud_id for i in batch]
    assert [i.state for i in found][1] in {InstanceState.TERMINATING, InstanceState.TERMINATED}
    assert provider.find_batch(FACTORY, "gl-never-launched") == []


# --- terminate ------------------------------------------------------------------------------------


def test_terminate_batches_ids_within_the_bucket_and_counts_vanished_ids_as_gone(
    make_provider: ProviderFactory, ec2: Any
) -> None:
    limits = Ec2RateLimits(terminate_instances=TokenBucket(capacity=4, refill_per_second=20))
    provider = make_provider({"rate_limits": limits}, all_or_nothing=True)
    launched = provider.launch(request("gl-t", count=10))
    ids = [i.cloud_id for i in launched]
    vanished = "i-0123456789abcdef0"

    result = provider.terminate([*ids, vanished])

    assert set(result.accepted) == {*ids, vanished}
    assert result.failed == {}
    assert provider.calls["TerminateInstances"] == 4  # chunks 4 + 4 + 3, one retried without
    assert live_ids(ec2) == set()


def test_an_instance_that_refuses_is_reported_and_the_rest_still_terminate(
    make_provider: ProviderFactory, proxy: FaultyProxy, ec2: Any
) -> None:
    provider = make_provider(all_or_nothing=True)
    launched = provider.launch(request("gl-prot", count=3))
    protected = launched[1].cloud_id
    message = (
        f"The instance '{protected}' may not be terminated. Modify its 'disableApiTermination'"
        " instance attribute and try again."
    )
    body = ec2_error_body("OperationNotPermitted", message)
    proxy.add(Fault("status", "TerminateInstances", times=1, status=400, body=body))

    result = provider.terminate([i.cloud_id for i in launched])

    assert set(result.accepted) == {launched[0].cloud_id, launched[2].cloud_id}
    assert list(result.failed) == [protected]
    assert "OperationNotPermitted" in result.failed[protected]
    assert live_ids(ec2) == {protected}


# --- throttling, backoff, rate limits -------------------------------------------------------------


def test_throttled_calls_back_off_and_converge_without_duplicate_instances(
    make_provider: ProviderFactory, proxy: FaultyProxy, clock: FakeClock, ec2: Any
) -> None:
    provider = make_provider(all_or_nothing=True)
    proxy.add(throttle("RunInstances", times=3), throttle("DescribeInstances", times=2))

    launched = provider.launch(request("gl-thr", count=3))
    listed = provider.list(FACTORY)

    assert len(launched) == 3
    assert {i.cloud_id for i in listed} == {i.cloud_id for i in launched}
    assert live_ids(ec2) == {i.cloud_id for i in launched}
    assert provider.retrier.retries == {"RunInstances": 3, "DescribeInstances": 2}
    assert provider.calls["RunInstances"] == 4
    assert proxy.counts["RunInstances"] == 4
    assert proxy.forwarded["RunInstances"] == 1
    # full jitter: each wait within its exponential ceiling (1, 2, 4 s)
    backoffs = clock.slept[:3]
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(backoffs, [1, 2, 4], strict=True))
    assert provider.retrier.slept == pytest.approx(sum(clock.slept))


def test_throttling_that_outlasts_the_retries_is_a_throttled_error_and_launches_nothing(
    make_provider: ProviderFactory, proxy: FaultyProxy, ec2: Any
) -> None:
    provider = make_provider(all_or_nothing=True)
    proxy.add(throttle("RunInstances", times=-1))
    with pytest.raises(ThrottledError, match=r"still throttled \(RequestLimitExceeded\) after 6"):
        provider.launch(request("gl-never", count=2))
    assert proxy.counts["RunInstances"] == 6
    assert live_ids(ec2) == set()


def test_the_describe_bucket_holds_the_rate_even_while_throttled(
    make_provider: ProviderFactory, proxy: FaultyProxy, clock: FakeClock
) -> None:
    limits = Ec2RateLimits(describe=TokenBucket(capacity=2, refill_per_second=0.5))
    provider = make_provider({"rate_limits": limits})
    sent_at: list[float] = []
    provider.client.meta.events.register(
        "before-send.ec2.DescribeInstances", lambda **_: sent_at.append(clock.now)
    )
    proxy.add(throttle("DescribeInstances", times=3))
    start = clock.now

    for _ in range(6):
        provider.list(FACTORY)

    assert len(sent_at) == 9  # 6 pages + 3 throttled tries, each took a token
    for index, at in enumerate(sent_at):
        assert index + 1 <= 2 + 0.5 * (at - start) + 1e-9
    assert sent_at[-1] - start >= (9 - 2) / 0.5


def test_launch_waits_for_instance_tokens_as_well_as_request_tokens(
    make_provider: ProviderFactory, clock: FakeClock
) -> None:
    limits = Ec2RateLimits(run_instances_instances=TokenBucket(capacity=6, refill_per_second=2))
    provider = make_provider({"rate_limits": limits}, all_or_nothing=True)
    start = clock.now
    provider.launch(request("gl-r1", count=4))
    provider.launch(request("gl-r2", count=4))  # 2 instance tokens short at 2/s
    assert clock.now - start == pytest.approx(1.0)
    with pytest.raises(ProviderError, match="holds 6"):
        provider.launch(request("gl-r3", count=7))


# --- outcome unknown: settle by tag, never relaunch blindly ---------------------------------------


def test_a_launch_whose_answer_was_lost_is_found_by_tag_not_launched_twice(
    make_provider: ProviderFactory, proxy: FaultyProxy, ec2: Any
) -> None:
    provider = make_provider(all_or_nothing=True)
    proxy.add(Fault("lose_answer", "RunInstances"))

    launched = provider.launch(request("gl-lost", count=3))

    assert [i.glidein_id for i in launched] == ["gl-lost.0", "gl-lost.1", "gl-lost.2"]
    assert proxy.forwarded["RunInstances"] == 1
    assert provider.calls["DescribeInstances"] == 1
    assert live_ids(ec2) == {i.cloud_id for i in launched}


def test_a_server_error_before_launching_is_looked_up_then_retried(
    make_provider: ProviderFactory, proxy: FaultyProxy, ec2: Any
) -> None:
    provider = make_provider(all_or_nothing=True)
    proxy.add(unavailable("RunInstances", times=1))

    launched = provider.launch(request("gl-503", count=2))

    assert len(launched) == 2
    assert provider.calls["DescribeInstances"] == 1  # looked up: not there
    assert provider.calls["RunInstances"] == 2
    assert live_ids(ec2) == {i.cloud_id for i in launched}


# --- credentials ----------------------------------------------------------------------------------


def signing_key(seen_headers: dict[str, str]) -> str:
    """The access key id in a SigV4 Authorization header."""
    authorization = seen_headers["Authorization"]
    return authorization.split("Credential=")[1].split("/")[0]


def test_role_credentials_are_assumed_through_sts_and_refreshed_before_expiry(
    make_provider: ProviderFactory,
    proxy: FaultyProxy,
    key_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wall = {"now": datetime.now(UTC)}
    provider = make_provider(
        {"credentials": {"type": "role", "role_arn": ROLE_ARN, "source_file": str(key_file)}},
        wallclock=lambda: wall["now"],
    )
    caplog.set_level(logging.DEBUG, logger="gwms")

    provider.list(FACTORY)
    provider.list(FACTORY)
    wall["now"] += timedelta(minutes=50)  # inside the 15-minute refresh window of a 1 h role
    provider.list(FACTORY)

    assume = [s for s in proxy.seen if s.action == "AssumeRole"]
    describe = [s for s in proxy.seen if s.action == "DescribeInstances"]
    assert len(assume) == 2
    assert signing_key(assume[0].headers) == ACCESS_KEY_ID
    assert form(assume[0])["RoleArn"] == ROLE_ARN
    keys = [signing_key(s.headers) for s in describe]
    assert all(key.startswith("ASIA") for key in keys)  # STS session keys
    assert keys[0] == keys[1] != keys[2]
    assert all("X-Amz-Security-Token" in s.headers for s in describe)
    tokens = {s.headers["X-Amz-Security-Token"] for s in describe}
    logged = caplog.text
    assert "assumed role" in logged
    assert SECRET_ACCESS_KEY not in logged
    assert not any(token in logged for token in tokens)


def test_frontend_key_pair_credentials_sign_the_calls(proxy: FaultyProxy, clock: FakeClock) -> None:
    cloud = Ec2Cloud(
        name="aws-fe",
        type="ec2",
        region=REGION,
        endpoint_url=proxy.url,
        credentials={"type": "from_frontend"},
    )
    credential = AwsKeyPairCredential(
        id="vo1-aws",
        trust_domain="grid",
        access_key_id="AKIAFRONTEND00000001",
        secret_access_key="frontend-secret-access-key-0001",
    )
    provider = build_provider(
        cloud, factory=FACTORY, credential=credential, clock=clock, sleep=clock.sleep
    )
    assert isinstance(provider, Ec2Provider)
    provider.list(FACTORY)
    assert signing_key(proxy.seen[-1].headers) == "AKIAFRONTEND00000001"
    with pytest.raises(CredentialError, match="takes its credentials from the frontend"):
        build_provider(cloud, factory=FACTORY)


def test_a_key_pair_file_readable_by_others_is_refused(
    make_provider: ProviderFactory, tmp_path: Path
) -> None:
    loose = write_key_pair_file(tmp_path / "loose")
    os.chmod(loose, 0o644)
    with pytest.raises(CredentialError, match=r"mode 0644\); run chmod 600"):
        make_provider({"credentials": {"type": "key_pair", "file": str(loose)}})


def test_a_key_pair_file_without_keys_says_what_to_write(
    make_provider: ProviderFactory, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    with pytest.raises(CredentialError, match=r"\[default\] section with aws_access_key_id"):
        make_provider({"credentials": {"type": "key_pair", "file": str(empty)}})
