"""`packer validate` of every source, per OS, with fake credentials: EC2 pointed at a closed
loopback port, OpenStack authenticating against the fake on loopback, qemu with the local
source disk's paths. Real Packer, real playbook."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from gwms.cli import main
from gwms.images import sourcedisk
from gwms.images.packer import Packer
from gwms.images.pipeline import BuildPlan, validate
from tests.fakes.openstack import OpenStackCloud

pytest_plugins = ["tests.fakes.openstack_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
OSES = ("debian12", "el9")
AUTH_ROUTE = "POST /v3/auth/tokens"


def _closed_port() -> int:
    """A loopback port nothing listens on: EC2 calls, if any, fail here and go nowhere else."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAGWMSFAKEFAKEFAKE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-not-real")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return {"ec2_endpoint": f"http://127.0.0.1:{_closed_port()}"}


def _plan(provider: str, os_name: str, variables: dict[str, str] | None = None) -> BuildPlan:
    return BuildPlan(root=ROOT, provider=provider, os_name=os_name, variables=variables or {})


@pytest.mark.parametrize("os_name", OSES)
def test_the_ec2_source_validates_with_fake_credentials(
    os_name: str, fake_aws: dict[str, str]
) -> None:
    run = validate(_plan("ec2", os_name, fake_aws), Packer())
    assert run.ok, run.errors


@pytest.mark.parametrize("os_name", OSES)
def test_the_openstack_source_authenticates_against_the_fake(
    os_name: str, openstack_cloud: OpenStackCloud
) -> None:
    packer = Packer(env={"OS_CLIENT_CONFIG_FILE": str(openstack_cloud.clouds_yaml)})
    before = openstack_cloud.fake.calls(AUTH_ROUTE)
    run = validate(_plan("openstack", os_name, {"openstack_cloud": openstack_cloud.cloud}), packer)
    assert run.ok, run.errors
    assert openstack_cloud.fake.calls(AUTH_ROUTE) > before


def test_openstack_validation_fails_when_keystone_refuses(openstack_cloud: OpenStackCloud) -> None:
    openstack_cloud.fake.inject_failures(AUTH_ROUTE, count=5, status=401)
    packer = Packer(env={"OS_CLIENT_CONFIG_FILE": str(openstack_cloud.clouds_yaml)})
    run = validate(
        _plan("openstack", "debian12", {"openstack_cloud": openstack_cloud.cloud}), packer
    )
    assert not run.ok
    assert any("Authentication failed" in e or "401" in e for e in run.errors), run.errors


@pytest.mark.parametrize("os_name", OSES)
def test_the_qemu_source_validates_with_the_local_source_disk(os_name: str) -> None:
    run = validate(_plan("qemu", os_name), Packer())
    assert run.ok, run.errors


@pytest.mark.parametrize("os_name", OSES)
def test_the_qemu_source_validates_as_a_cloud_image_with_a_nocloud_seed(
    os_name: str, tmp_path: Path
) -> None:
    # What `gwms image build --qemu-source var-files` passes: the OS file's cloud image,
    # its own bootloader (no kernel), the seed as a CD-ROM, and the build key. A literal
    # checksum: the OS file's `file:https://...` would make validate fetch it.
    key = sourcedisk.build_key(tmp_path)  # Packer parses it
    plan = _plan(
        "qemu",
        os_name,
        {
            "qemu_seed_iso": str(tmp_path / "seed.iso"),
            "ssh_private_key_file": str(key),
            "qemu_source_checksum": "sha256:" + "0" * 64,
        },
    )
    plan.qemu_source = "var-files"
    run = validate(plan, Packer())
    assert run.ok, run.errors


def test_a_var_file_naming_an_undeclared_type_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pkrvars.hcl"
    bad.write_text('qemu_memory = "lots"\n')
    plan = _plan("qemu", "debian12")
    plan.var_files = [bad]
    run = validate(plan, Packer())
    assert not run.ok
    assert any("qemu_memory" in e or "number" in e for e in run.errors), run.errors


def test_required_plugins_stay_apart_because_packer_1_6_rejects_them() -> None:
    packer = Packer()
    version = tuple(int(p) for p in packer.version().split(".")[:2])
    plugins = packer.run(["validate", "-syntax-only", str(ROOT / "images" / "plugins")])
    templates = packer.run(["validate", "-syntax-only", str(ROOT / "images")])
    assert templates.ok, templates.errors
    if version < (1, 7):
        assert not plugins.ok
        assert any("required_plugins" in e for e in plugins.errors)
    else:
        assert plugins.ok, plugins.errors


def test_gwms_image_validate_reports_each_provider(
    capsys: pytest.CaptureFixture[str], fake_aws: dict[str, str]
) -> None:
    code = main(
        [
            "image",
            "validate",
            "--root",
            str(ROOT),
            "--provider",
            "ec2",
            "--var",
            f"ec2_endpoint={fake_aws['ec2_endpoint']}",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == "ec2: valid\n"
    code = main(
        ["image", "validate", "--root", str(ROOT), "--provider", "qemu", "--var", "qemu_cpus=many"]
    )
    assert code == 1
    assert "qemu: INVALID" in capsys.readouterr().err
