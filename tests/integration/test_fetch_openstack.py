"""OpenStack user data from the Nova metadata service over real HTTP."""

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest

from gwms_context.middleware import openstack
from gwms_context.middleware.base import FetchOptions, MiddlewareError
from tests.fakes.metadata import FakeOpenStackMetadata, Fault

pytestmark = pytest.mark.integration

UUID = "0c8ed8a4-7f1e-4c59-9a3e-3d1f8b2c6a10"
USER_DATA = gzip.compress(b"openstack glidein \x00\xff", mtime=0)


@pytest.fixture
def nova() -> Iterator[FakeOpenStackMetadata]:
    with FakeOpenStackMetadata(uuid=UUID, user_data=USER_DATA) as server:
        yield server


def options(server: FakeOpenStackMetadata, **kwargs: object) -> FetchOptions:
    return FetchOptions(metadata_url=server.url, timeout=0.5, deadline=3.0, **kwargs)  # type: ignore[arg-type]


def test_user_data_comes_from_the_metadata_service_byte_for_byte(
    nova: FakeOpenStackMetadata,
) -> None:
    assert openstack.fetch(options(nova)) == USER_DATA
    assert openstack.meta_data(options(nova))["uuid"] == UUID


def test_no_user_data_is_a_404_and_means_none() -> None:
    with FakeOpenStackMetadata(uuid=UUID, user_data=None) as nova:
        assert openstack.fetch(options(nova)) is None


def test_an_explicit_config_drive_directory_wins_over_the_service(
    nova: FakeOpenStackMetadata, tmp_path: Path
) -> None:
    latest = tmp_path / "openstack/latest"
    latest.mkdir(parents=True)
    (latest / "user_data").write_bytes(b"from the drive")

    assert openstack.fetch(options(nova, config_drive=str(tmp_path))) == b"from the drive"
    assert nova.seen == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault(path=openstack.META_DATA_PATH, status=200, body=b"<html>not json</html>"),
        Fault(path=openstack.META_DATA_PATH, status=200, body=b'["uuid"]'),
        Fault(path=openstack.META_DATA_PATH, status=404, body=b""),
    ],
)
def test_a_service_whose_meta_data_is_garbage_is_not_trusted_for_user_data(
    nova: FakeOpenStackMetadata, fault: Fault
) -> None:
    nova.inject(fault)

    with pytest.raises(MiddlewareError, match=r"OpenStack meta|no OpenStack metadata service"):
        openstack.fetch(options(nova))

    assert nova.requests_to(openstack.USER_DATA_PATH) == []


def test_a_briefly_unavailable_service_is_retried(nova: FakeOpenStackMetadata) -> None:
    nova.inject(Fault(path=openstack.USER_DATA_PATH, status=503, body=b"busy"))

    assert openstack.fetch(options(nova)) == USER_DATA
    assert len(nova.requests_to(openstack.USER_DATA_PATH)) == 2


def test_a_forbidden_user_data_answer_is_an_error_naming_the_status(
    nova: FakeOpenStackMetadata,
) -> None:
    nova.inject(Fault(path=openstack.USER_DATA_PATH, status=403, body=b"no"))

    with pytest.raises(MiddlewareError, match="answered HTTP 403 for user_data"):
        openstack.fetch(options(nova))
