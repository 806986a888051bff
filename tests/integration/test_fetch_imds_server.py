"""The local IMDS server behaves like EC2's instance metadata service, seen over real HTTP."""

import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from gwms.localvm.imds import MAX_TOKEN_TTL, TOKEN_HEADER, TTL_HEADER, ImdsServer

pytestmark = pytest.mark.integration


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # never a proxy from the environment
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def imds(clock: FakeClock) -> Iterator[ImdsServer]:
    with ImdsServer(
        instance_id="i-0abc", user_data=b"\x1f\x8b raw", availability_zone="eu-west-1b", clock=clock
    ) as server:
        yield server


def token(http: requests.Session, imds: ImdsServer, ttl: int = 60) -> str:
    answer = http.put(f"{imds.url}/latest/api/token", headers={TTL_HEADER: str(ttl)}, timeout=5)
    assert answer.status_code == 200
    assert answer.headers[TTL_HEADER] == str(ttl)
    return answer.text


def test_a_session_token_unlocks_user_data_and_meta_data(
    http: requests.Session, imds: ImdsServer
) -> None:
    headers = {TOKEN_HEADER: token(http, imds)}

    assert http.get(f"{imds.url}/latest/user-data", headers=headers, timeout=5).content == (
        b"\x1f\x8b raw"
    )
    for path, value in [
        ("instance-id", "i-0abc"),
        ("instance-type", "m5.large"),
        ("placement/availability-zone", "eu-west-1b"),
    ]:
        answer = http.get(f"{imds.url}/latest/meta-data/{path}", headers=headers, timeout=5)
        assert (answer.status_code, answer.text) == (200, value)
    listing = http.get(f"{imds.url}/latest/meta-data/", headers=headers, timeout=5).text
    assert listing.splitlines() == [
        "ami-launch-index",
        "instance-id",
        "instance-type",
        "placement/",
    ]


def test_imdsv1_is_refused_when_tokens_are_required(
    http: requests.Session, imds: ImdsServer
) -> None:
    assert http.get(f"{imds.url}/latest/user-data", timeout=5).status_code == 401


def test_imdsv1_is_answered_when_allowed(http: requests.Session) -> None:
    with ImdsServer(user_data=b"v1", require_token=False) as server:
        assert http.get(f"{server.url}/latest/user-data", timeout=5).content == b"v1"


@pytest.mark.parametrize("ttl", [None, "0", str(MAX_TOKEN_TTL + 1), "soon"])
def test_a_token_request_without_a_valid_ttl_is_a_bad_request(
    http: requests.Session, imds: ImdsServer, ttl: str | None
) -> None:
    headers = {} if ttl is None else {TTL_HEADER: ttl}

    assert http.put(f"{imds.url}/latest/api/token", headers=headers, timeout=5).status_code == 400


def test_a_token_request_through_a_proxy_is_forbidden(
    http: requests.Session, imds: ImdsServer
) -> None:
    headers = {TTL_HEADER: "60", "X-Forwarded-For": "10.0.0.1"}

    assert http.put(f"{imds.url}/latest/api/token", headers=headers, timeout=5).status_code == 403


def test_tokens_expire_after_their_ttl_and_can_be_revoked(
    http: requests.Session, imds: ImdsServer, clock: FakeClock
) -> None:
    first = {TOKEN_HEADER: token(http, imds, ttl=60)}
    clock.now += 59
    assert http.get(f"{imds.url}/latest/user-data", headers=first, timeout=5).status_code == 200
    clock.now += 2
    assert http.get(f"{imds.url}/latest/user-data", headers=first, timeout=5).status_code == 401

    second = {TOKEN_HEADER: token(http, imds)}
    imds.revoke_tokens()
    assert http.get(f"{imds.url}/latest/user-data", headers=second, timeout=5).status_code == 401


def test_a_made_up_token_is_unauthorized(http: requests.Session, imds: ImdsServer) -> None:
    headers = {TOKEN_HEADER: "AQAAAmadeup"}

    assert http.get(f"{imds.url}/latest/user-data", headers=headers, timeout=5).status_code == 401


def test_the_token_path_only_takes_put(http: requests.Session, imds: ImdsServer) -> None:
    assert http.get(f"{imds.url}/latest/api/token", timeout=5).status_code == 405


def test_missing_user_data_and_unknown_keys_are_404(http: requests.Session) -> None:
    with ImdsServer(require_token=False) as server:
        assert http.get(f"{server.url}/latest/user-data", timeout=5).status_code == 404
        assert http.get(f"{server.url}/latest/meta-data/nope", timeout=5).status_code == 404
        spot = http.get(f"{server.url}/latest/meta-data/spot/instance-action", timeout=5)
        assert spot.status_code == 404


def test_a_spot_interruption_notice_appears_in_meta_data(
    http: requests.Session, imds: ImdsServer
) -> None:
    headers = {TOKEN_HEADER: token(http, imds)}
    imds.set_spot_action("terminate", datetime(2026, 11, 22, 20, 2, tzinfo=UTC))

    answer = http.get(
        f"{imds.url}/latest/meta-data/spot/instance-action", headers=headers, timeout=5
    )

    assert answer.json() == {"action": "terminate", "time": "2026-11-22T20:02:00Z"}
    assert "spot/" in http.get(f"{imds.url}/latest/meta-data/", headers=headers, timeout=5).text
    with pytest.raises(ValueError, match="spot action must be one of"):
        imds.set_spot_action("reboot")


def test_each_server_gets_its_own_free_port_and_releases_it_on_stop() -> None:
    first, second = ImdsServer().start(), ImdsServer().start()
    ports = (first.port, second.port)
    first.stop()
    second.stop()

    assert ports[0] != ports[1]
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_the_repr_never_shows_the_user_data() -> None:
    assert "secret" not in repr(ImdsServer(user_data=b"secret proxy"))
