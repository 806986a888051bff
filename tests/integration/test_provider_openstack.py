"""The OpenStack provider against the stateful OpenStack fake over HTTP (real openstacksdk).

The provider runs on a fake clock (its sleeps advance it), so backoff and rate-limit waits
cost no wall time; the fake's hooks inject 429/5xx answers and count requests per route.
"""

from __future__ import annotations

import gzip
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openstack.compute.v2.server import Server as SdkServer

from gwms.config.common import TokenBucket
from gwms.config.factory import ApiRateLimits, Entry, OpenStackCloud
from gwms.credentials.model import OpenStackAppCredential
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
from gwms.factory.providers.openstack import OpenStackProvider, _launch_index
from gwms.factory.providers.registry import build_provider, entry_options
from tests.fakes.faulty_proxy import Fault, faulty_proxy
from tests.fakes.openstack_fixtures import OpenStackCloud as FakeCloud
from tests.fakes.openstack_fixtures import openstack_cloud  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

FACTORY = "gfactory-test"
CREATE = "POST /compute/v2.1/servers"
LIST = "GET /compute/v2.1/servers/detail"
DELETE = "DELETE /compute/v2.1/servers/<server_id>"


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
def clock() -> FakeClock:
    return FakeClock()


ProviderFactory = Callable[..., OpenStackProvider]


@pytest.fixture
def make_provider(openstack_cloud: FakeCloud, clock: FakeClock) -> ProviderFactory:  # noqa: F811
    def make(cloud: dict[str, Any] | None = None, **kwargs: Any) -> OpenStackProvider:
        settings: dict[str, Any] = {
            "name": "os-test",
            "type": "openstack",
            "credentials": {
                "type": "clouds_yaml",
                "cloud": openstack_cloud.app_cred_cloud,
                "file": str(openstack_cloud.clouds_yaml),
            },
            "retries": {"attempts": 5, "initial_backoff": 1, "max_backoff": 8},
            **(cloud or {}),
        }
        options = {"clock": clock, "sleep": clock.sleep, "rand": random.Random(5).random}
        options.update(kwargs)
        return OpenStackProvider(OpenStackCloud(**settings), factory=FACTORY, **options)

    return make


@pytest.fixture
def fake(openstack_cloud: FakeCloud) -> Any:  # noqa: F811
    return openstack_cloud.fake


@pytest.fixture
def image(fake: Any) -> str:
    return next(i["id"] for i in fake.state.images.values() if i["name"] == "debian-12-gwms")


def userdata() -> bytes:
    return gzip.compress(random.Random(17).randbytes(4000) + b"\x00\xff glidein", mtime=0)


def request(batch: str, image: str, count: int = 3, **kwargs: Any) -> LaunchRequest:
    values: dict[str, Any] = {
        "batch_id": batch,
        "count": count,
        "entry": "os_region_one",
        "client": "vo1-frontend.main",
        "image": image,
        "instance_type": "m1.small",
        "userdata": userdata(),
        "client_token": f"tok-{batch}",
    }
    values.update(kwargs)
    return LaunchRequest(**values)


def fake_server_ids(fake: Any) -> set[str]:
    return {s.id for s in fake.servers() if s.status not in ("DELETED",)}


# --- launch ---------------------------------------------------------------------------------------


def test_a_batch_of_three_is_one_create_named_and_tagged_with_userdata_byte_for_byte(
    make_provider: ProviderFactory, fake: Any, image: str
) -> None:
    provider = make_provider()
    launched = provider.launch(request("gl-b1", image, tags={"site": "cern"}))

    assert [i.glidein_id for i in launched] == ["gl-b1.0", "gl-b1.1", "gl-b1.2"]
    assert fake.calls(CREATE) == 1
    servers = {s.id: s for s in fake.servers()}
    assert {servers[i.cloud_id].name for i in launched} == {
        f"gwms-{FACTORY}-gl-b1-{n}" for n in (1, 2, 3)
    }
    for instance in launched:
        server = servers[instance.cloud_id]
        assert server.metadata[TAG_FACTORY] == FACTORY
        assert server.metadata[TAG_ENTRY] == "os_region_one"
        assert server.metadata[TAG_CLIENT] == "vo1-frontend.main"
        assert server.metadata[TAG_BATCH] == "gl-b1"
        assert server.metadata["site"] == "cern"
        assert server.flavor_id == "2"  # m1.small, resolved by name
        assert fake.user_data(instance.cloud_id) == userdata()
        assert instance.instance_type == "m1.small"
        assert instance.address is not None


def test_entry_options_set_key_network_groups_and_zone(
    make_provider: ProviderFactory,
    fake: Any,
    image: str,
    openstack_cloud: FakeCloud,  # noqa: F811
) -> None:
    openstack_cloud.connect().compute.create_keypair(name="gwms-ops")
    entry = Entry(
        name="os_region_one",
        cloud="os-test",
        image=image,
        instance_types=["m1.small"],
        key_name="gwms-ops",
        network="private",
        security_groups=["default"],
        availability_zone="nova",
    )
    [instance] = make_provider().launch(request("gl-opt", image, 1, options=entry_options(entry)))
    server = fake.server(instance.cloud_id)
    assert server.key_name == "gwms-ops"
    assert server.security_groups == ["default"]
    assert server.availability_zone == "nova"
    assert instance.address is not None
    assert instance.address.startswith("10.0.0.")


def test_near_the_quota_a_launch_takes_what_fits_unless_all_or_nothing(
    make_provider: ProviderFactory, fake: Any, image: str
) -> None:
    fake.set_quota(instances=2)
    with pytest.raises(ProviderError, match="Quota exceeded for instances"):
        make_provider(all_or_nothing=True).launch(request("gl-all", image, count=3))
    launched = make_provider().launch(request("gl-some", image, count=3))
    assert [i.glidein_id for i in launched] == ["gl-some.0", "gl-some.1"]


def test_userdata_over_novas_limit_fails_before_any_call(
    make_provider: ProviderFactory, fake: Any, image: str
) -> None:
    provider = make_provider()
    with pytest.raises(ProviderError, match="Nova takes at most 65535"):
        provider.launch(request("gl-big", image, userdata=os.urandom(49_152)))
    assert fake.calls(CREATE) == 0


# --- list and find_batch --------------------------------------------------------------------------


def test_list_pages_by_marker_with_one_call_per_page_and_only_this_factorys_servers(
    make_provider: ProviderFactory, image: str
) -> None:
    provider = make_provider(page_size=2)
    provider.launch(request("gl-a", image, count=3))
    provider.launch(request("gl-b", image, count=2, entry="os_other"))
    stranger = make_provider()
    stranger.factory = "other-factory"
    stranger.launch(request("gl-x", image, count=2))
    provider.calls.clear()

    listed = provider.list(FACTORY)

    assert sorted(i.glidein_id for i in listed) == [
        "gl-a.0", "gl-a.1", "gl-a.2", "gl-b.0", "gl-b.1",
    ]  # fmt: skip
    assert provider.calls["list_servers"] == 3  # pages of 2, 2, 1
    assert all(i.state == InstanceState.RUNNING for i in listed)
    assert {i.batch_id for i in provider.list(FACTORY, entry="os_other")} == {"gl-b"}


def test_find_batch_tells_apart_batches_whose_server_names_collide(
    make_provider: ProviderFactory, image: str
) -> None:
    provider = make_provider()
    two = provider.launch(request("gl-7", image, count=2))  # gwms-...-gl-7-1, -2
    one = provider.launch(request("gl-7-1", image, count=1))  # gwms-...-gl-7-1 too

    assert [i.cloud_id for i in provider.find_batch(FACTORY, "gl-7")] == [i.cloud_id for i in two]
    assert [i.glidein_id for i in provider.find_batch(FACTORY, "gl-7-1")] == ["gl-7-1.0"]
    assert [i.cloud_id for i in one] == [i.cloud_id for i in provider.find_batch(FACTORY, "gl-7-1")]
    assert provider.find_batch(FACTORY, "gl-none") == []


def test_launch_index_falls_back_to_novas_name_suffix_when_policy_hides_it() -> None:
    meta = {TAG_FACTORY: "f", TAG_BATCH: "gl-7"}
    assert _launch_index(SdkServer(name="gwms-f-gl-7-3", metadata=meta)) == 2
    assert _launch_index(SdkServer(name="gwms-f-gl-7", metadata=meta)) == 0
    batch_ending_in_digits = {TAG_FACTORY: "f", TAG_BATCH: "gl-7-1"}
    assert _launch_index(SdkServer(name="gwms-f-gl-7-1", metadata=batch_ending_in_digits)) == 0
    assert _launch_index(SdkServer(name="x", metadata=meta, launch_index=4)) == 4


# --- terminate ------------------------------------------------------------------------------------


def test_terminate_deletes_one_by_one_and_counts_missing_servers_as_gone(
    make_provider: ProviderFactory, fake: Any, image: str
) -> None:
    provider = make_provider()
    launched = provider.launch(request("gl-t", image, count=3))
    ids = [i.cloud_id for i in launched]

    result = provider.terminate([*ids, "00000000-0000-0000-0000-000000000000"])

    assert set(result.accepted) == {*ids, "00000000-0000-0000-0000-000000000000"}
    assert result.failed == {}
    assert fake.calls(DELETE) == 4
    assert fake_server_ids(fake) == set()


def test_a_server_nova_refuses_to_delete_is_reported_and_the_rest_go(
    make_provider: ProviderFactory, fake: Any, image: str
) -> None:
    provider = make_provider()
    launched = provider.launch(request("gl-409", image, count=3))
    fake.inject_failures(DELETE, 1, status=409)

    result = provider.terminate([i.cloud_id for i in launched])

    refused = launched[0].cloud_id
    assert list(result.failed) == [refused]
    assert "HTTP 409" in result.failed[refused]
    assert set(result.accepted) == {launched[1].cloud_id, launched[2].cloud_id}
    assert fake_server_ids(fake) == {refused}


# --- throttling, backoff, rate limits -------------------------------------------------------------


def test_throttled_and_failing_calls_back_off_and_converge_without_duplicates(
    make_provider: ProviderFactory, fake: Any, image: str, clock: FakeClock
) -> None:
    provider = make_provider()
    provider.launch(request("gl-warm", image, count=1))  # resolve the flavor first
    fake.inject_failures(CREATE, 2, status=429, retry_after=1)
    fake.inject_failures(LIST, 1, status=503)

    launched = provider.launch(request("gl-thr", image, count=3))

    assert len(launched) == 3
    assert fake.calls(CREATE) == 1 + 3
    assert len(provider.find_batch(FACTORY, "gl-thr")) == 3
    assert provider.retrier.retries == {"create_server": 2, "list_servers": 1}
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(clock.slept, [1, 2], strict=False))


def test_a_create_that_failed_on_the_server_side_is_looked_up_before_the_retry(
    make_provider: ProviderFactory, fake: Any, image: str
) -> None:
    provider = make_provider()
    fake.inject_failures(CREATE, 1, status=500)

    launched = provider.launch(request("gl-500", image, count=2))

    assert len(launched) == 2
    assert fake.calls(CREATE) == 2
    assert provider.calls["list_servers"] == 2  # the lookup (empty), then the batch listing
    assert len(fake_server_ids(fake)) == 2


def test_a_create_whose_answer_was_lost_is_found_by_name_not_created_twice(
    make_provider: ProviderFactory, fake: Any, image: str
) -> None:
    with faulty_proxy(fake.url) as proxy:
        # the catalog sends Nova traffic through the proxy (Keystone stays direct)
        fake.app.config["FAKE_BASE_URL"] = proxy.url
        proxy.add(Fault("lose_answer", "POST /compute/v2.1/servers"))
        provider = make_provider()

        launched = provider.launch(request("gl-lost", image, count=3))

        assert proxy.forwarded["POST /compute/v2.1/servers"] == 1
    assert [i.glidein_id for i in launched] == ["gl-lost.0", "gl-lost.1", "gl-lost.2"]
    assert fake.calls(CREATE) == 1
    assert len(fake_server_ids(fake)) == 3


def test_the_sdk_does_not_retry_behind_the_providers_back(
    make_provider: ProviderFactory, fake: Any, image: str
) -> None:
    provider = make_provider({"retries": {"attempts": 2}})
    provider.launch(request("gl-warm", image, count=1))
    fake.inject_failures(CREATE, 10, status=429)
    with pytest.raises(ThrottledError, match=r"still refused \(HTTP 429"):
        provider.launch(request("gl-never", image, count=1))
    assert fake.calls(CREATE) == 1 + 2


def test_the_default_bucket_is_novas_500_requests_per_5_minutes(
    make_provider: ProviderFactory,
) -> None:
    bucket = make_provider().limiter.buckets["api"]
    assert bucket.capacity == 500
    assert bucket.refill_per_second * 300 == pytest.approx(500)


def test_deletes_hold_the_bucket_rate_and_what_misses_the_deadline_is_left_for_later(
    make_provider: ProviderFactory, fake: Any, image: str, clock: FakeClock
) -> None:
    provider = make_provider()
    launched = provider.launch(request("gl-rate", image, count=8))
    limits = ApiRateLimits(api=TokenBucket(capacity=3, refill_per_second=0.5))
    slow = make_provider({"rate_limits": limits}, max_wait=7)
    start = clock.now

    result = slow.terminate([i.cloud_id for i in launched])

    # 3 at once, then one per 2 s: the 4th-6th fit in 7 s, the 7th (8 s) would not
    assert len(result.accepted) == 6
    assert len(result.failed) == 2
    assert all("rate bucket api" in why for why in result.failed.values())
    assert fake.calls(DELETE) == 6
    assert clock.now - start == pytest.approx(6.0)


# --- credentials ----------------------------------------------------------------------------------


def test_an_application_credential_file_in_openrc_form_authenticates(
    make_provider: ProviderFactory, fake: Any, tmp_path: Path
) -> None:
    creds = fake.credentials
    path = tmp_path / "app-cred.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            f"# from Horizon\nexport OS_APPLICATION_CREDENTIAL_ID={creds.app_cred_id}\n"
            f"export OS_APPLICATION_CREDENTIAL_SECRET='{creds.app_cred_secret}'\n"
        )
    cloud = {
        "credentials": {"type": "app_credential", "auth_url": fake.auth_url, "file": str(path)}
    }
    assert make_provider(cloud).list(FACTORY) == []
    os.chmod(path, 0o640)
    with pytest.raises(CredentialError, match=r"mode 0640\); run chmod 600"):
        make_provider(cloud)


def test_a_frontend_application_credential_is_used_for_from_frontend_clouds(
    fake: Any, clock: FakeClock
) -> None:
    cloud = OpenStackCloud(
        name="os-fe",
        type="openstack",
        credentials={"type": "from_frontend", "auth_url": fake.auth_url},
    )
    credential = OpenStackAppCredential(
        id="vo1-os",
        trust_domain="grid",
        auth_url=fake.auth_url,
        app_credential_id=fake.credentials.app_cred_id,
        app_credential_secret=fake.credentials.app_cred_secret,
    )
    provider = build_provider(cloud, factory=FACTORY, credential=credential, clock=clock)
    assert isinstance(provider, OpenStackProvider)
    assert provider.list(FACTORY) == []
    with pytest.raises(CredentialError, match="takes its credentials from the frontend"):
        build_provider(cloud, factory=FACTORY)


def test_a_wrong_secret_is_a_provider_error_that_names_the_credentials(
    fake: Any, tmp_path: Path
) -> None:
    path = tmp_path / "bad"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            f"application_credential_id: {fake.credentials.app_cred_id}\n"
            "application_credential_secret: wrong\n"
        )
    cloud = OpenStackCloud(
        name="os-bad",
        type="openstack",
        credentials={"type": "app_credential", "auth_url": fake.auth_url, "file": str(path)},
    )
    provider = OpenStackProvider(cloud, factory=FACTORY)
    with pytest.raises(ProviderError, match="check the cloud's credentials"):
        provider.list(FACTORY)
