"""The VM-side HTTP client: no environment proxies, no redirects, bounded bodies and time."""

import time
from collections.abc import Iterator

import pytest

from gwms_context.httpclient import Deadline, HttpClient, HttpError
from gwms_context.middleware import ec2
from gwms_context.middleware.base import FetchOptions, MiddlewareError
from tests.fakes.metadata import Fault, FaultyImds

pytestmark = pytest.mark.integration

PATH = "/latest/user-data"


@pytest.fixture
def imds() -> Iterator[FaultyImds]:
    with FaultyImds(user_data=b"payload", require_token=False) as server:
        yield server


def test_proxies_from_the_environment_are_never_used(
    imds: FaultyImds, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = FaultyImds().start()
    dead_url = dead.url
    dead.stop()  # a proxy address where nothing listens
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)

    assert ec2.fetch(FetchOptions(metadata_url=imds.url, timeout=0.5, deadline=2)) == b"payload"


def test_redirects_are_not_followed(imds: FaultyImds) -> None:
    with FaultyImds(user_data=b"elsewhere", require_token=False) as other:
        imds.inject(
            Fault(path=PATH, status=302, body=b"", headers=(("Location", other.url + PATH),))
        )

        response = HttpClient(timeout=0.5, deadline=2).get(imds.url + PATH)

        assert response.status == 302
        assert other.seen == []


def test_a_redirected_user_data_request_is_an_error(imds: FaultyImds) -> None:
    imds.inject(Fault(path=PATH, status=301, body=b"", headers=(("Location", "http://x/"),)))

    with pytest.raises(MiddlewareError, match="answered HTTP 301"):
        ec2.fetch(FetchOptions(metadata_url=imds.url, timeout=0.5, deadline=2))


def test_an_oversized_answer_is_an_error_not_read_to_the_end(imds: FaultyImds) -> None:
    imds.inject(Fault(path=PATH, status=200, body=b"g" * 300_000))

    with pytest.raises(HttpError, match="larger than 100000 bytes"):
        HttpClient(timeout=0.5, deadline=2, max_body=100_000).get(imds.url + PATH)


def test_client_errors_are_answers_not_retried(imds: FaultyImds) -> None:
    imds.inject(Fault(path=PATH, status=418, body=b"teapot", times=-1))

    response = HttpClient(timeout=0.5, deadline=2).get(imds.url + PATH)

    assert (response.status, response.body) == (418, b"teapot")
    assert len(imds.requests_to(PATH)) == 1


def test_tries_are_bounded_by_count_as_well_as_by_time(imds: FaultyImds) -> None:
    imds.inject(Fault(path=PATH, status=503, body=b"", times=-1))

    with pytest.raises(HttpError, match="failed after 3 tries"):
        HttpClient(timeout=0.5, deadline=10, max_tries=3, backoff=0.01).get(imds.url + PATH)

    assert len(imds.requests_to(PATH)) == 3


def test_one_deadline_is_shared_by_every_request_of_a_fetch(imds: FaultyImds) -> None:
    imds.inject(Fault(path=PATH, delay=0.3, times=-1))
    client = HttpClient(timeout=1.0, deadline=Deadline(0.5))
    started = time.monotonic()

    assert client.get(imds.url + PATH).body == b"payload"
    with pytest.raises(HttpError, match="timed out"):
        client.get(imds.url + PATH)  # only ~0.2 s left: the second try cannot finish

    assert time.monotonic() - started < 0.5 + 0.3


def test_a_response_repr_never_shows_the_body(imds: FaultyImds) -> None:
    response = HttpClient(timeout=0.5, deadline=2).get(imds.url + PATH)

    assert "payload" not in repr(response)
    assert "7 bytes" in repr(response)
