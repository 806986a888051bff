"""User data from local sources: OpenStack config drive, NoCloud seed, cloud-init's stored copy."""

import gzip
import os
import re
import tempfile
from pathlib import Path

import pytest

from gwms_context import service
from gwms_context.middleware import cloudinit, nocloud, openstack
from gwms_context.middleware.base import FetchOptions, MiddlewareError, mounted_read_only
from tests.fakes.metadata import make_vm_root

USER_DATA = gzip.compress(b"Content-Type: multipart/mixed\x00\xff", mtime=0)


def config_drive(directory: Path, user_data: bytes | None) -> Path:
    latest = directory / "openstack/latest"
    latest.mkdir(parents=True)
    (latest / "meta_data.json").write_text('{"uuid": "6f0a7c1e-1d1b-4f2e-9d9e-1b0f2a3c4d5e"}')
    if user_data is not None:
        (latest / "user_data").write_bytes(user_data)
    return directory


def test_a_config_drive_directory_gives_its_user_data_byte_for_byte(tmp_path: Path) -> None:
    drive = config_drive(tmp_path / "drive", USER_DATA)

    assert openstack.fetch(FetchOptions(config_drive=str(drive))) == USER_DATA
    assert openstack.meta_data(FetchOptions(config_drive=str(drive)))["uuid"].startswith("6f0a")


def test_a_config_drive_without_user_data_means_none(tmp_path: Path) -> None:
    drive = config_drive(tmp_path / "drive", None)

    assert openstack.fetch(FetchOptions(config_drive=str(drive))) is None


def test_a_directory_that_is_no_config_drive_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "user_data").write_bytes(b"x")

    with pytest.raises(MiddlewareError, match="does not look like an OpenStack config drive"):
        openstack.fetch(FetchOptions(config_drive=str(tmp_path)))


def test_a_config_drive_that_cannot_be_mounted_is_an_error_suggesting_a_directory(
    tmp_path: Path,
) -> None:
    # The label points at a device node that does not exist: the real `mount` fails.
    root = make_vm_root(tmp_path / "root", labels=("config-2",))

    with pytest.raises(MiddlewareError) as error:
        openstack.fetch(FetchOptions(root=str(root)))

    message = str(error.value)
    assert message.startswith(f"cannot mount {root}/dev/disk/by-label/config-2 read-only: ")
    assert "--config-drive DIR" in message
    assert "\n" not in message


def fake_mount_tools(bin_dir: Path) -> Path:
    """`mount -o ro DEV DIR` that copies the directory DEV into DIR; `umount DIR` empties it.

    This machine's kernel cannot mount an ISO; the real drive is mounted in the image
    boot test (tests/e2e/test_image_build.py).
    """
    bin_dir.mkdir()
    (bin_dir / "mount").write_text('#!/bin/sh\ncp -R "$3"/. "$4"/\n')
    (bin_dir / "umount").write_text('#!/bin/sh\nfind "$1" -mindepth 1 -delete\n')
    for tool in ("mount", "umount"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def test_with_a_config_drive_attached_the_meta_data_comes_from_it_not_from_nova(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Booted with a config drive and no metadata service: asking Nova would cost the whole
    # HTTP deadline before the pilot starts. The drive answers, so Nova is never asked.
    drive = config_drive(tmp_path / "drive", USER_DATA)
    (drive / "openstack/latest/meta_data.json").write_text('{"uuid": "u-1", "launch_index": 3}')
    root = make_vm_root(tmp_path / "root", labels=("config-2",))
    (root / "dev/disk/by-label/config-2").unlink()
    (root / "dev/disk/by-label/config-2").symlink_to(drive)
    bin_dir = fake_mount_tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    unreachable = "http://127.0.0.1:9"  # only if --metadata-url is given

    opts = FetchOptions(root=str(root), timeout=0.5, deadline=1.0)
    assert openstack.fetch(opts) == USER_DATA
    assert openstack.meta_data(opts) == {"uuid": "u-1", "launch_index": 3}
    assert service.launch_index(openstack.NAME, opts) == 3

    # An explicit --metadata-url still means the service, drive or not.
    with pytest.raises(MiddlewareError, match=re.escape(unreachable)):
        openstack.meta_data(FetchOptions(root=str(root), metadata_url=unreachable, deadline=1.0))


def test_meta_data_with_a_drive_that_cannot_be_mounted_names_the_drive(tmp_path: Path) -> None:
    root = make_vm_root(tmp_path / "root", labels=("config-2",))

    with pytest.raises(MiddlewareError, match=r"cannot mount .*config-2 read-only"):
        openstack.meta_data(FetchOptions(root=str(root)))


def test_the_temporary_mount_point_is_removed_even_when_mount_fails(tmp_path: Path) -> None:
    before = set(os.listdir(tempfile.gettempdir()))

    with pytest.raises(MiddlewareError), mounted_read_only(str(tmp_path / "no-such-device")):
        pass

    assert {
        n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("gwms-drive-")
    } == set()


def test_a_nocloud_seed_directory_gives_its_user_data(tmp_path: Path) -> None:
    (tmp_path / "user-data").write_bytes(USER_DATA)
    (tmp_path / "meta-data").write_text("instance-id: iid-local01\n")

    assert nocloud.fetch(FetchOptions(config_drive=str(tmp_path))) == USER_DATA


def test_nocloud_falls_back_to_the_seed_directory_under_the_root(tmp_path: Path) -> None:
    root = make_vm_root(tmp_path, files={"var/lib/cloud/seed/nocloud-net/user-data": USER_DATA})

    assert nocloud.fetch(FetchOptions(root=str(root))) == USER_DATA


def test_a_nocloud_seed_without_user_data_means_none(tmp_path: Path) -> None:
    (tmp_path / "meta-data").write_text("instance-id: iid-local01\n")

    assert nocloud.fetch(FetchOptions(config_drive=str(tmp_path))) is None


def test_no_nocloud_seed_anywhere_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MiddlewareError, match="no NoCloud seed"):
        nocloud.fetch(FetchOptions(root=str(make_vm_root(tmp_path))))


def test_cloud_init_stored_user_data_is_reused_byte_for_byte(tmp_path: Path) -> None:
    root = make_vm_root(tmp_path, files={"var/lib/cloud/instances/i-7/user-data.txt": USER_DATA})
    (root / "var/lib/cloud/instance").symlink_to("/var/lib/cloud/instances/i-7")

    assert cloudinit.fetch(FetchOptions(root=str(root))) == USER_DATA


def test_cloud_init_empty_user_data_means_the_cloud_had_none(tmp_path: Path) -> None:
    root = make_vm_root(tmp_path, files={"var/lib/cloud/instance/user-data.txt": b""})

    assert cloudinit.fetch(FetchOptions(root=str(root))) is None


def test_cloud_init_without_stored_user_data_is_an_error_saying_to_wait(tmp_path: Path) -> None:
    with pytest.raises(MiddlewareError, match="order the service after cloud-init"):
        cloudinit.fetch(FetchOptions(root=str(make_vm_root(tmp_path))))


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"metadata_url": "169.254.169.254"}, "is not an http:// or https:// URL"),
        ({"timeout": 0}, "must be positive"),
        ({"deadline": -1}, "must be positive"),
    ],
)
def test_bad_fetch_options_are_refused_up_front(kwargs: dict, what: str) -> None:
    with pytest.raises(MiddlewareError, match=what):
        FetchOptions(**kwargs)
