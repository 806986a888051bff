"""The fake OpenStack, driven by real openstacksdk calls over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openstack
import pytest
import requests
import yaml
from keystoneauth1 import exceptions as keystone_errors
from openstack import exceptions
from openstack.config import OpenStackConfig
from openstack.connection import Connection

from tests.fakes.openstack import FakeOpenStack, OpenStackCloud

pytest_plugins = ["tests.fakes.openstack_fixtures"]
pytestmark = [
    pytest.mark.integration,
    # openstacksdk warns about its own deprecated internals on every call; not ours to fix.
    pytest.mark.filterwarnings("ignore::openstack.warnings.OpenStackDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning"),
]

SERVERS = "POST /compute/v2.1/servers"
FLAVORS = "GET /compute/v2.1/flavors/detail"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def boot(conn: Connection, name: str = "glidein", **attrs: Any) -> Any:
    """Create a server on the private network from the seeded image, as our provider does."""
    image = conn.image.find_image("debian-12-gwms")
    network = conn.network.find_network("private")
    attrs.setdefault("networks", [{"uuid": network.id}])
    return conn.compute.create_server(name=name, image_id=image.id, flavor_id="2", **attrs)


# -- authentication ------------------------------------------------------------------------


def test_password_cloud_from_clouds_yaml_lists_flavors_images_and_networks(
    openstack_cloud_env: OpenStackCloud,
) -> None:
    conn = openstack.connect(cloud=openstack_cloud_env.cloud)
    assert [f.name for f in conn.compute.flavors()][:2] == ["m1.tiny", "m1.small"]
    assert [i.name for i in conn.image.images()] == ["debian-12-gwms"]
    assert {n.name for n in conn.network.networks()} == {"private", "public"}
    assert conn.list_flavors()[0].vcpus == 1
    assert openstack_cloud_env.fake.calls("POST /v3/auth/tokens") == 1


def test_application_credential_authenticates_and_is_scoped_to_the_project(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect(openstack_cloud.app_cred_cloud)
    assert conn.current_project_id == openstack_cloud.fake.credentials.project_id
    assert next(f.name for f in conn.compute.flavors()) == "m1.tiny"


def test_explicit_auth_arguments_work_without_any_clouds_yaml(
    openstack_cloud: OpenStackCloud,
) -> None:
    fake = openstack_cloud.fake
    conn = openstack.connect(
        load_yaml_config=False,
        load_envvars=False,
        auth_url=fake.auth_url,
        username=fake.credentials.username,
        password=fake.credentials.password,
        project_name=fake.credentials.project_name,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )
    assert len(conn.list_networks()) == 2


@pytest.mark.parametrize(
    ("cloud", "field", "value"),
    [
        ("gwms-fake", "password", "not-the-password"),
        ("gwms-fake", "username", "someone-else"),
        ("gwms-fake", "project_name", "other-project"),
        ("gwms-fake-appcred", "application_credential_secret", "not-the-secret"),
    ],
)
def test_wrong_credentials_are_refused_with_401(
    openstack_cloud: OpenStackCloud, cloud: str, field: str, value: str
) -> None:
    config = yaml.safe_load(openstack_cloud.clouds_yaml.read_text())
    config["clouds"][cloud]["auth"][field] = value
    bad = openstack_cloud.clouds_yaml.with_name("bad-clouds.yaml")
    bad.write_text(yaml.safe_dump(config))
    conn = OpenStackCloud(openstack_cloud.fake, bad).connect(cloud)
    with pytest.raises(keystone_errors.Unauthorized) as raised:
        list(conn.compute.flavors())
    assert raised.value.http_status == 401
    assert openstack_cloud.fake.calls(FLAVORS) == 0


def test_every_service_call_without_a_valid_token_is_401(openstack_cloud: OpenStackCloud) -> None:
    url = openstack_cloud.fake.url
    for path in ("/compute/v2.1/servers", "/network/v2.0/networks", "/image/v2/images"):
        assert requests.get(url + path, timeout=5).status_code == 401
        assert requests.get(url + path, headers={"X-Auth-Token": "x"}, timeout=5).status_code == 401
    assert requests.get(url + "/compute/v2.1", timeout=5).status_code == 200  # discovery is open


def test_token_carries_expiry_and_a_catalog_pointing_back_at_the_fake(
    openstack_cloud: OpenStackCloud,
) -> None:
    fake = openstack_cloud.fake
    creds = fake.credentials
    reply = requests.post(
        fake.auth_url + "/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {
                        "id": creds.app_cred_id,
                        "secret": creds.app_cred_secret,
                    },
                }
            }
        },
        timeout=5,
    )
    assert reply.status_code == 201
    assert reply.headers["X-Subject-Token"]
    token = reply.json()["token"]
    assert token["expires_at"].endswith("Z")
    urls = {s["type"]: s["endpoints"][0]["url"] for s in token["catalog"]}
    assert urls["compute"] == f"{fake.url}/compute/v2.1"
    assert {"identity", "network", "image"} <= urls.keys()


def test_revoked_tokens_make_the_sdk_authenticate_again(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    list(conn.compute.flavors())
    openstack_cloud.fake.revoke_tokens()
    assert len(list(conn.compute.flavors())) == 5
    assert openstack_cloud.fake.calls("POST /v3/auth/tokens") == 2


def test_clouds_yaml_is_private_and_names_only_loopback(openstack_cloud: OpenStackCloud) -> None:
    mode = stat.S_IMODE(os.stat(openstack_cloud.clouds_yaml).st_mode)
    assert mode == 0o600
    clouds = yaml.safe_load(openstack_cloud.clouds_yaml.read_text())["clouds"]
    assert {c["auth"]["auth_url"] for c in clouds.values()} == {openstack_cloud.fake.auth_url}
    assert openstack_cloud.fake.auth_url.startswith("http://127.0.0.1:")
    assert openstack_cloud.fake.credentials.password not in repr(openstack_cloud.fake.credentials)


# -- servers -------------------------------------------------------------------------------


def test_server_keeps_user_data_byte_for_byte_and_metadata(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    user_data = gzip.compress(b"glidein \x00\xff" * 100, mtime=0)
    created = boot(conn, user_data=b64(user_data), metadata={"gwms-glidein-id": "gl-1"})
    server = conn.compute.get_server(created.id)
    assert base64.b64decode(server.user_data) == user_data
    assert openstack_cloud.fake.user_data(created.id) == user_data
    assert server.metadata == {"gwms-glidein-id": "gl-1"}
    conn.compute.set_server_metadata(created.id, entry="ec2_us")
    assert conn.compute.get_server_metadata(created.id).metadata == {
        "gwms-glidein-id": "gl-1",
        "entry": "ec2_us",
    }
    assert server.status == "ACTIVE"
    assert server.addresses["private"][0]["addr"].startswith("10.0.0.")


def test_user_data_over_65535_base64_characters_is_refused_as_nova_does(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect()
    largest = b64(b"x" * 49149)  # 65,532 characters
    assert len(largest) <= 65535
    boot(conn, name="fits", user_data=largest)
    with pytest.raises(exceptions.BadRequestException, match="user_data"):
        boot(conn, name="too-big", user_data=b64(b"x" * 49152))  # 65,536 characters
    assert [s.name for s in openstack_cloud.fake.servers()] == ["fits"]


def test_count_three_makes_three_servers_named_and_indexed_as_nova_does(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect()
    boot(conn, name="gl", min_count=3, max_count=3, metadata={"batch": "b1"})
    servers = sorted(conn.compute.servers(details=True), key=lambda s: s.launch_index)
    assert [(s.name, s.launch_index) for s in servers] == [("gl-1", 0), ("gl-2", 1), ("gl-3", 2)]
    assert {s.metadata["batch"] for s in servers} == {"b1"}
    assert openstack_cloud.fake.calls(SERVERS) == 1


def test_listing_with_a_small_limit_pages_through_every_server(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect()
    boot(conn, name="gl", min_count=7, max_count=7)
    names = [s.name for s in conn.compute.servers(details=True, limit=3)]
    assert sorted(names) == [f"gl-{i}" for i in range(1, 8)]
    assert len(names) == 7
    assert openstack_cloud.fake.calls("GET /compute/v2.1/servers/detail") >= 3


def test_unbounded_listing_follows_next_links_past_the_nova_max_limit(
    openstack_cloud: OpenStackCloud,
) -> None:
    openstack_cloud.fake.state.max_limit = 4
    conn = openstack_cloud.connect()
    boot(conn, name="gl", min_count=9, max_count=9)
    assert len(list(conn.compute.servers())) == 9
    assert openstack_cloud.fake.calls("GET /compute/v2.1/servers/detail") == 3


def test_name_is_a_regex_filter_and_status_filters_by_state(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect()
    boot(conn, name="entry-a", min_count=2, max_count=2)
    boot(conn, name="entry-b")
    assert sorted(s.name for s in conn.compute.servers(name="^entry-a-")) == [
        "entry-a-1",
        "entry-a-2",
    ]
    assert len(list(conn.compute.servers(status="ACTIVE"))) == 3
    assert list(conn.compute.servers(status="BUILD")) == []


def test_servers_stay_in_build_for_the_boot_delay_then_turn_active(
    openstack_cloud: OpenStackCloud,
) -> None:
    openstack_cloud.fake.set_boot_delay(0.3)
    conn = openstack_cloud.connect()
    server = boot(conn)
    assert conn.compute.get_server(server.id).status == "BUILD"
    active = conn.compute.wait_for_server(server, status="ACTIVE", interval=0.1, wait=5)
    assert active.status == "ACTIVE"


def test_deleted_server_is_gone(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    server = boot(conn)
    conn.compute.delete_server(server)
    with pytest.raises(exceptions.NotFoundException):
        conn.compute.get_server(server.id)
    assert list(conn.network.ports(device_id=server.id)) == []


def test_deleted_server_stays_listed_as_deleting_for_the_delete_delay(
    openstack_cloud: OpenStackCloud,
) -> None:
    openstack_cloud.fake.set_delete_delay(0.3)
    conn = openstack_cloud.connect()
    server = boot(conn)
    conn.compute.delete_server(server)
    assert conn.compute.get_server(server.id).task_state == "deleting"
    conn.compute.wait_for_delete(server, interval=0.1, wait=5)
    assert openstack_cloud.fake.servers() == []


@pytest.mark.parametrize(("mode", "status"), [("stays", "ACTIVE"), ("error", "ERROR")])
def test_undeletable_server_survives_delete(
    openstack_cloud: OpenStackCloud, mode: Any, status: str
) -> None:
    conn = openstack_cloud.connect()
    server = boot(conn)
    openstack_cloud.fake.mark_undeletable(server.id, mode)
    conn.compute.delete_server(server)
    assert conn.compute.get_server(server.id).status == status


def test_quota_refuses_what_does_not_fit_and_trims_max_count(
    openstack_cloud: OpenStackCloud,
) -> None:
    openstack_cloud.fake.set_quota(instances=4)
    conn = openstack_cloud.connect()
    boot(conn, name="a", min_count=1, max_count=10)
    assert len(openstack_cloud.fake.servers()) == 4
    with pytest.raises(exceptions.ForbiddenException, match="Quota exceeded"):
        boot(conn, name="b")
    assert conn.compute.get_limits().absolute.instances_used == 4


def test_create_image_action_makes_an_active_glance_image(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    server = boot(conn)
    image_id = conn.compute.create_server_image(server, "snap", metadata={"k": "v"})
    image = conn.image.get_image(image_id)
    assert (image.name, image.status) == ("snap", "active")
    assert image.instance_uuid == server.id
    assert image.properties["k"] == "v"


def test_glance_images_are_created_queued_and_go_active_on_upload(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect()
    image = conn.image.create_image(name="empty", disk_format="qcow2", container_format="bare")
    assert conn.image.get_image(image.id).status == "queued"
    conn.image.create_image(
        name="full", data=b"disk bytes", disk_format="raw", container_format="bare"
    )
    full = conn.image.find_image("full")
    assert (full.status, full.size) == ("active", 10)


def test_keypairs_are_imported_or_generated(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    generated = conn.compute.create_keypair(name="packer-tmp")
    assert generated.private_key.startswith("-----BEGIN RSA PRIVATE KEY-----")
    conn.compute.create_keypair(name="ops", public_key=generated.public_key)
    assert sorted(k.name for k in conn.compute.keypairs()) == ["ops", "packer-tmp"]
    server = boot(conn, key_name="ops")
    assert conn.compute.get_server(server.id).key_name == "ops"


def test_availability_zones_are_listed(openstack_cloud: OpenStackCloud) -> None:
    conn = openstack_cloud.connect()
    assert [z.name for z in conn.compute.availability_zones()] == ["nova"]


def test_cloud_layer_create_server_waits_and_gets_a_floating_ip(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect()
    server = conn.create_server(
        "vm", image="debian-12-gwms", flavor="m1.small", network="private", userdata="hi",
        wait=True, timeout=10,
    )  # fmt: skip
    assert server.status == "ACTIVE"
    assert openstack_cloud.fake.user_data(server.id) == b"hi"
    (floating,) = conn.network.ips()
    assert conn.network.get_port(floating.port_id).device_id == server.id
    kinds = {a["OS-EXT-IPS:type"] for a in conn.compute.get_server(server.id).addresses["private"]}
    assert kinds == {"fixed", "floating"}


# -- microversions, faults, traffic ---------------------------------------------------------


def test_microversion_is_negotiated_and_out_of_range_is_406(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect()
    list(conn.compute.servers())
    reply = conn.compute.get("/servers/detail", microversion="2.80")
    assert reply.status_code == 406
    reply = conn.compute.get("/servers/detail", microversion="2.79")
    assert reply.headers["OpenStack-API-Version"] == "compute 2.79"


def test_an_injected_503_reaches_the_sdk_and_the_next_call_succeeds(
    openstack_cloud: OpenStackCloud,
) -> None:
    openstack_cloud.fake.inject_failures(FLAVORS, count=1, status=503)
    conn = openstack_cloud.connect()
    with pytest.raises(exceptions.HttpException) as raised:
        list(conn.compute.flavors())
    assert raised.value.status_code == 503
    assert len(list(conn.compute.flavors())) == 5
    assert openstack_cloud.fake.calls(FLAVORS) == 2


def test_sdk_retrying_429_honours_retry_after_and_gets_through(
    openstack_cloud: OpenStackCloud,
) -> None:
    openstack_cloud.fake.inject_failures(SERVERS, count=2, status=429, retry_after=0)
    conn = openstack_cloud.connect(status_code_retries=3, retriable_status_codes=[429])
    start = time.monotonic()
    boot(conn)
    assert time.monotonic() - start < 1.0  # keystoneauth's own backoff would take 1.5 s
    assert openstack_cloud.fake.calls(SERVERS) == 3
    assert len(openstack_cloud.fake.servers()) == 1


def test_injecting_on_a_route_the_fake_lacks_is_an_error(openstack_cloud: OpenStackCloud) -> None:
    with pytest.raises(ValueError, match="no route"):
        openstack_cloud.fake.inject_failures("POST /compute/v2.1/server")


def test_sdk_traffic_stays_on_loopback_and_on_known_routes(
    openstack_cloud: OpenStackCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    destinations: list[Any] = []
    real_connect: Callable[..., Any] = socket.socket.connect

    def recording_connect(sock: socket.socket, address: Any) -> Any:
        destinations.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    conn = openstack_cloud.connect()
    server = boot(conn, user_data=b64(b"x"), min_count=2, max_count=2)
    list(conn.compute.servers(limit=1))
    conn.compute.delete_server(server)
    list(conn.image.images())
    assert destinations
    assert {address[0] for address in destinations} == {"127.0.0.1"}
    assert openstack_cloud.fake.unknown_routes == []


def test_fake_stops_and_frees_its_port() -> None:
    fake = FakeOpenStack().start()
    port = fake.port
    fake.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    start = time.monotonic()
    fake.stop()  # idempotent
    assert time.monotonic() - start < 1


def test_concurrent_creates_get_distinct_servers_and_addresses(
    openstack_cloud: OpenStackCloud,
) -> None:
    conn = openstack_cloud.connect()
    image = conn.image.find_image("debian-12-gwms")
    network = conn.network.find_network("private")

    def create(worker: int) -> None:
        own = openstack_cloud.connect()
        for i in range(5):
            own.compute.create_server(
                name=f"w{worker}-{i}", image_id=image.id, flavor_id="1",
                networks=[{"uuid": network.id}],
            )  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, range(4)))
    servers = openstack_cloud.fake.servers()
    addresses = {s["fixed_ips"][0]["ip_address"] for s in conn.network.ports()}
    assert len({s.name for s in servers}) == 20
    assert len(addresses) == 20


@pytest.mark.timeout(30)
def test_fake_runs_standalone_until_terminated(tmp_path: Path) -> None:
    clouds_yaml = tmp_path / "clouds.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openstack", "--clouds-yaml", str(clouds_yaml)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "fake OpenStack at http://127.0.0.1:" in proc.stdout.readline()
        config = OpenStackConfig(config_files=[str(clouds_yaml)], load_envvars=False)
        conn = Connection(config=config.get_one(cloud="gwms-fake"))
        assert len(list(conn.compute.flavors())) == 5
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
