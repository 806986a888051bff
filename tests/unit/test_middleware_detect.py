"""Middleware detection: offline evidence under a fake root decides which cloud it is."""

from pathlib import Path

import pytest

from gwms_context.middleware import MiddlewareError, detect_all, detect_middleware
from gwms_context.middleware.base import CONFIDENT, WEAK, in_root
from tests.fakes.metadata import make_vm_root

CLOUD_INIT_RAN = {
    "var/lib/cloud/instance/user-data.txt": b"#cloud-config\n",
    "run/cloud-init/x": "",
}


@pytest.mark.parametrize(
    ("dmi", "labels", "files", "expected"),
    [
        ({"sys_vendor": "Amazon EC2", "product_name": "m5.large"}, (), {}, "ec2"),
        ({"bios_vendor": "Amazon EC2"}, (), {}, "ec2"),
        ({"sys_vendor": "Xen", "bios_version": "4.11.amazon"}, (), {}, "ec2"),
        ({"product_name": "OpenStack Nova", "sys_vendor": "RDO"}, (), {}, "openstack"),
        ({"product_name": "OpenStack Compute"}, (), {}, "openstack"),
        ({"product_name": "KVM", "chassis_asset_tag": "OpenTelekomCloud"}, (), {}, "openstack"),
        ({"product_name": "KVM"}, ("config-2",), {}, "openstack"),
        ({"product_name": "KVM"}, ("CONTEXT",), {}, "opennebula"),
        ({"product_name": "Google Compute Engine", "sys_vendor": "Google"}, (), {}, "gce"),
        ({"product_name": "Standard PC (Q35 + ICH9, 2009)"}, ("cidata",), {}, "nocloud"),
        ({}, ("CIDATA",), {}, "nocloud"),
        ({}, (), {"var/lib/cloud/seed/nocloud/user-data": "x"}, "nocloud"),
        ({}, (), CLOUD_INIT_RAN, "cloudinit"),
    ],
)
def test_each_cloud_is_detected_from_its_own_offline_evidence(
    tmp_path: Path, dmi: dict, labels: tuple, files: dict, expected: str
) -> None:
    root = make_vm_root(tmp_path, dmi=dmi, labels=labels, files=files)

    assert detect_middleware(str(root), cmdline="") == expected
    results = detect_all(str(root))
    assert [name for name, found in results.items() if found] == [expected]
    assert results[expected].evidence, "a detection always says why"


def test_a_plain_kvm_guest_matches_nothing_and_the_error_says_what_to_do(tmp_path: Path) -> None:
    root = make_vm_root(tmp_path, dmi={"sys_vendor": "QEMU", "product_name": "Standard PC"})

    with pytest.raises(MiddlewareError) as error:
        detect_middleware(str(root), cmdline="")

    message = str(error.value)
    assert "no middleware detected" in message
    assert "--middleware NAME" in message
    assert "gwms.middleware=NAME" in message
    assert "\n" not in message


def test_an_instance_uuid_starting_with_ec2_is_only_a_hint_reported_in_the_error(
    tmp_path: Path,
) -> None:
    # One random UUID in 4096 starts with "ec2": never enough on its own.
    root = make_vm_root(tmp_path, dmi={"product_uuid": "ec2a1b2c-0000-4000-8000-000000000000"})

    assert detect_all(str(root))["ec2"].confidence == WEAK
    with pytest.raises(MiddlewareError, match=r"weak hints: ec2: the instance UUID"):
        detect_middleware(str(root), cmdline="")


def test_two_confident_clouds_are_ambiguous_and_the_error_names_both_with_evidence(
    tmp_path: Path,
) -> None:
    root = make_vm_root(tmp_path, dmi={"sys_vendor": "Amazon EC2"}, labels=("CONTEXT",))

    with pytest.raises(MiddlewareError) as error:
        detect_middleware(str(root), cmdline="")

    message = str(error.value)
    assert "ec2, opennebula" in message
    assert "sys_vendor is 'Amazon EC2'" in message
    assert "context CD" in message


def test_cloud_init_data_from_this_boot_wins_over_the_cloud_it_came_from(tmp_path: Path) -> None:
    root = make_vm_root(tmp_path, dmi={"sys_vendor": "Amazon EC2"}, files=CLOUD_INIT_RAN)

    assert detect_middleware(str(root), cmdline="") == "cloudinit"


def test_cloud_init_data_left_from_the_image_build_does_not_win(tmp_path: Path) -> None:
    # No /run/cloud-init: cloud-init did not run on this boot, the file may be stale.
    root = make_vm_root(
        tmp_path,
        dmi={"sys_vendor": "Amazon EC2"},
        files={"var/lib/cloud/instance/user-data.txt": b"stale"},
    )

    assert detect_all(str(root))["cloudinit"].confidence == WEAK
    assert detect_middleware(str(root), cmdline="") == "ec2"


def test_an_explicit_override_wins_over_any_evidence(tmp_path: Path) -> None:
    root = make_vm_root(tmp_path, dmi={"sys_vendor": "Amazon EC2"}, files=CLOUD_INIT_RAN)

    assert detect_middleware(str(root), override="OpenNebula", cmdline="") == "opennebula"


def test_the_kernel_command_line_override_is_read_from_proc_cmdline(tmp_path: Path) -> None:
    root = make_vm_root(
        tmp_path,
        dmi={"sys_vendor": "Amazon EC2"},
        cmdline="BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro gwms.middleware=openstack quiet",
    )

    assert detect_middleware(str(root)) == "openstack"
    assert detect_middleware(str(root), override="gce") == "gce"


def test_an_unknown_middleware_name_is_an_error_listing_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(MiddlewareError) as error:
        detect_middleware(str(tmp_path), cmdline="gwms.middleware=azure")

    message = str(error.value)
    assert "'azure'" in message
    assert "kernel command line" in message
    assert "ec2, openstack, opennebula, gce, nocloud, cloudinit" in message


def test_absolute_symlinks_under_a_fake_root_stay_inside_it(tmp_path: Path) -> None:
    # cloud-init's /var/lib/cloud/instance -> /var/lib/cloud/instances/<id> (absolute).
    root = make_vm_root(
        tmp_path,
        files={"var/lib/cloud/instances/i-1/user-data.txt": b"mine", "run/cloud-init/x": ""},
    )
    (root / "var/lib/cloud/instance").symlink_to("/var/lib/cloud/instances/i-1")

    resolved = in_root(str(root), "var/lib/cloud/instance/user-data.txt")

    assert resolved == str(root / "var/lib/cloud/instances/i-1/user-data.txt")
    assert in_root(str(root), "../../../etc/passwd") == str(root / "etc/passwd")
    assert detect_all(str(root))["cloudinit"].confidence == CONFIDENT


def test_a_symlink_loop_under_the_root_is_an_error_not_a_hang(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")

    with pytest.raises(MiddlewareError, match="too many symbolic links"):
        in_root(str(tmp_path), "a/file")
