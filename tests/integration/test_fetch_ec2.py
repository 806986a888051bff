"""EC2 user data over real HTTP: IMDSv2 tokens, refresh on 401, IMDSv1 fallback, bounded retries."""

import gzip
import time
from collections.abc import Iterator

import pytest

from gwms.localvm.imds import TOKEN_HEADER, TOKEN_PATH, TTL_HEADER
from gwms_context.middleware import ec2
from gwms_context.middleware.base import FetchOptions, MiddlewareError
from tests.fakes.metadata import Fault, FaultyImds

pytestmark = pytest.mark.integration

USER_DATA = gzip.compress(b"glidein\x00\xff" * 50, mtime=0)
USER_DATA_PATH = "/latest/user-data"


@pytest.fixture
def imds() -> Iterator[FaultyImds]:
    with FaultyImds(instance_id="i-0feed", user_data=USER_DATA) as server:
        yield server


def options(server: FaultyImds, timeout: float = 1.0, deadline: float = 5.0) -> FetchOptions:
    return FetchOptions(metadata_url=server.url, timeout=timeout, deadline=deadline)


def test_imdsv2_fetch_puts_a_token_with_a_ttl_and_sends_it_with_the_get(
    imds: FaultyImds,
) -> None:
    assert ec2.fetch(options(imds)) == USER_DATA

    (put,) = imds.requests_to(TOKEN_PATH, "PUT")
    (get,) = imds.requests_to(USER_DATA_PATH)
    assert 1 <= int(put.headers[TTL_HEADER]) <= 21600
    assert get.headers[TOKEN_HEADER]


def test_a_401_gets_a_fresh_token_and_the_request_is_repeated(imds: FaultyImds) -> None:
    imds.inject(Fault(path=USER_DATA_PATH, status=401, body=b"Unauthorized"))

    assert ec2.fetch(options(imds)) == USER_DATA

    assert len(imds.requests_to(TOKEN_PATH, "PUT")) == 2
    first, second = imds.requests_to(USER_DATA_PATH)
    assert first.headers[TOKEN_HEADER] != second.headers[TOKEN_HEADER]


def test_a_session_renews_its_token_after_the_service_forgot_it(imds: FaultyImds) -> None:
    session = ec2.Imds(options(imds).http_client(), imds.url)
    assert session.get("/latest/meta-data/instance-id") == b"i-0feed"

    imds.revoke_tokens()

    assert session.get("/latest/meta-data/instance-id") == b"i-0feed"
    assert len(imds.requests_to(TOKEN_PATH, "PUT")) == 2


def test_a_token_refused_for_ever_is_an_error_after_a_bounded_number_of_renewals(
    imds: FaultyImds,
) -> None:
    imds.inject(Fault(path=USER_DATA_PATH, status=401, body=b"", times=-1))

    with pytest.raises(MiddlewareError, match="keeps refusing our IMDSv2 session token"):
        ec2.fetch(options(imds))

    assert len(imds.requests_to(TOKEN_PATH, "PUT")) == 3


@pytest.mark.parametrize("status", [403, 404, 405])
def test_ec2_clones_without_imdsv2_are_read_with_plain_imdsv1_gets(status: int) -> None:
    with FaultyImds(user_data=USER_DATA, require_token=False) as clone:
        clone.refuse_tokens(status)

        assert ec2.fetch(options(clone)) == USER_DATA

        (get,) = clone.requests_to(USER_DATA_PATH)
        assert TOKEN_HEADER not in get.headers


def test_an_unanswered_token_request_falls_back_to_imdsv1_within_the_deadline() -> None:
    with FaultyImds(user_data=USER_DATA, require_token=False) as clone:
        clone.inject(Fault(method="PUT", path=TOKEN_PATH, delay=2.0, times=-1))
        started = time.monotonic()

        assert ec2.fetch(options(clone, timeout=0.3, deadline=3.0)) == USER_DATA

        assert time.monotonic() - started < 1.5
        assert len(clone.requests_to(TOKEN_PATH, "PUT")) == 1  # a timed-out PUT is not retried


def test_a_service_that_refuses_tokens_but_requires_them_is_an_error(imds: FaultyImds) -> None:
    imds.refuse_tokens(403)

    with pytest.raises(MiddlewareError, match="requires an IMDSv2 session token"):
        ec2.fetch(options(imds))


def test_no_user_data_is_a_404_and_means_none() -> None:
    with FaultyImds(user_data=None) as server:
        assert ec2.fetch(options(server)) is None


def test_server_errors_are_retried_until_an_answer_comes(imds: FaultyImds) -> None:
    imds.inject(Fault(path=USER_DATA_PATH, status=500, body=b"oops", times=2))
    imds.inject(Fault(method="PUT", path=TOKEN_PATH, status=503, body=b"", times=1))

    assert ec2.fetch(options(imds)) == USER_DATA

    assert len(imds.requests_to(USER_DATA_PATH)) == 3


def test_server_errors_for_ever_end_in_an_error_within_the_deadline(imds: FaultyImds) -> None:
    imds.inject(Fault(path=USER_DATA_PATH, status=500, body=b"oops", times=-1))
    started = time.monotonic()

    with pytest.raises(MiddlewareError) as error:
        ec2.fetch(options(imds, timeout=0.5, deadline=1.5))

    assert time.monotonic() - started < 1.5 + 0.5
    assert f"GET {imds.url}{USER_DATA_PATH} failed after" in str(error.value)
    assert "last: HTTP 500" in str(error.value)
    assert len(imds.requests_to(USER_DATA_PATH)) >= 3


def test_a_service_slower_than_every_try_ends_in_an_error_within_the_deadline(
    imds: FaultyImds,
) -> None:
    imds.inject(Fault(path=USER_DATA_PATH, delay=5.0, times=-1))
    started = time.monotonic()

    with pytest.raises(MiddlewareError, match=r"last: timed out"):
        ec2.fetch(options(imds, timeout=0.25, deadline=1.0))

    assert time.monotonic() - started < 1.0 + 0.5


def test_an_unreachable_service_ends_in_an_error_within_the_deadline() -> None:
    server = FaultyImds().start()
    url = server.url
    server.stop()  # nothing listens on that port now
    started = time.monotonic()

    with pytest.raises(MiddlewareError, match="check that the metadata service is reachable"):
        ec2.fetch(FetchOptions(metadata_url=url, timeout=0.2, deadline=0.8))

    assert time.monotonic() - started < 0.8 + 0.5


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe binary", b"x" * 5000, b""])
def test_a_garbage_token_is_an_error_not_sent_along(imds: FaultyImds, garbage: bytes) -> None:
    imds.inject(Fault(method="PUT", path=TOKEN_PATH, status=200, body=garbage, times=-1))

    with pytest.raises(MiddlewareError, match="unusable IMDSv2 token"):
        ec2.fetch(options(imds))

    assert imds.requests_to(USER_DATA_PATH) == []


def test_no_spot_interruption_means_none(imds: FaultyImds) -> None:
    assert ec2.spot_instance_action(options(imds)) is None


def test_a_spot_interruption_notice_is_returned_as_announced(imds: FaultyImds) -> None:
    imds.set_spot_action("stop")

    notice = ec2.spot_instance_action(options(imds))

    assert notice is not None
    assert notice["action"] == "stop"
    assert notice["time"].endswith("Z")


@pytest.mark.parametrize("garbage", [b"<html>", b'{"action": "explode", "time": "x"}', b"[]"])
def test_a_garbage_spot_notice_is_an_error(imds: FaultyImds, garbage: bytes) -> None:
    imds.inject(Fault(path=ec2.SPOT_ACTION_PATH, status=200, body=garbage, times=-1))

    with pytest.raises(MiddlewareError, match="spot instance-action that is not"):
        ec2.spot_instance_action(options(imds))
