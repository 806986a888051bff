"""The rebuild pipeline: var files layer in order, unchanged inputs make `gwms image build` a
no-op that says why, a change names what changed, and a build lands in the manifest.

Packer is a small executable here that speaks Packer's machine-readable protocol and
records its argv, so the pipeline's real process handling and parsing run.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gwms.cli import main
from gwms.images import seed
from gwms.images.manifest import Manifest
from gwms.images.packer import Packer
from gwms.images.pipeline import BuildPlan, ImageBuildError, build
from gwms.images.seed import SeedError

ROOT = Path(__file__).resolve().parents[2]

# Answers `version` and `build` like Packer 1.6.6; the artifact depends on the builder.
FAKE_PACKER = r"""
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
log = Path(os.environ["FAKE_PACKER_LOG"])
with log.open("a") as out:
    out.write(json.dumps(args) + "\n")
if args[0] == "version":
    print("1,,version,1.6.6")
    sys.exit(0)
only = next(a.split("=", 1)[1] for a in args if a.startswith("-only="))
variables = dict(a[5:].split("=", 1) for a in args if a.startswith("-var="))
if variables.get("qemu_seed_iso"):  # keep what the VM would have seen
    (log.parent / "seed-seen.iso").write_bytes(Path(variables["qemu_seed_iso"]).read_bytes())
if os.environ.get("FAKE_PACKER_FAIL"):
    print("4,,ui,message,    " + only + ": fatal: [default]: FAILED! => no package htcondor")
    print("5,,ui,error,Build '" + only + "' errored: Error executing Ansible")
    sys.exit(1)
print("2,,ui,say,==> " + only + ": Provisioning with Ansible...")
if only.startswith("amazon-ebs"):
    print("3," + only + ",artifact,0,id,us-east-1:ami-0123%!(PACKER_COMMA)eu-west-1:ami-0456")
elif only.startswith("openstack"):
    print("3," + only + ",artifact,0,id,1b7c0c7e-glance")
else:
    out = Path(variables["qemu_output_directory"])
    out.mkdir(parents=True)
    (out / "image.qcow2").write_bytes(b"QFI")
    print("3," + only + ",artifact,0,id,VM")
    print("3," + only + ",artifact,0,file,0," + str(out / "image.qcow2"))
print("4," + only + ",artifact,0,end")
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the repository's image inputs (templates, var files, playbooks, roles)."""
    root = tmp_path / "repo"
    for name in ("images", "playbooks", "contextualization"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "roles" / "glidein_base" / "tasks").mkdir(parents=True)
    (root / "roles" / "glidein_base" / "tasks" / "main.yml").write_text("- name: one\n")
    return root


@pytest.fixture
def packer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Packer:
    script = tmp_path / "bin" / "packer"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\n{FAKE_PACKER}")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_PACKER_LOG", str(tmp_path / "packer-argv.log"))
    monkeypatch.setenv("GWMS_IMAGE_CACHE", str(tmp_path / "image-cache"))  # the build key
    return Packer(str(script))


def _builds_run(tmp_path: Path) -> int:
    log = tmp_path / "packer-argv.log"
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if json.loads(line)[0] == "build")


def _argv(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "packer-argv.log").read_text().splitlines()
    return next(json.loads(line) for line in reversed(lines) if json.loads(line)[0] == "build")


def test_var_files_layer_os_then_provider_then_the_operators(repo: Path, tmp_path: Path) -> None:
    site = tmp_path / "site.pkrvars.hcl"
    site.write_text('region = "eu-west-1"\n')
    plan = BuildPlan(root=repo, provider="ec2", os_name="el9", var_files=[site])
    assert plan.layered_var_files() == [
        repo / "images/os/el9.pkrvars.hcl",
        repo / "images/providers/ec2.pkrvars.hcl",
        site,
    ]
    assert plan.resolved_region() == "eu-west-1"
    assert BuildPlan(root=repo, provider="ec2").resolved_region() == "us-east-1"
    assert BuildPlan(root=repo, provider="ec2", region="ap-south-1").resolved_region() == (
        "ap-south-1"
    )


def test_unknown_provider_os_or_var_file_is_one_sentence(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="unknown provider 'gce'; choose one of"):
        BuildPlan(root=repo, provider="gce").layered_var_files()
    with pytest.raises(ImageBuildError, match="unknown OS 'win11'"):
        BuildPlan(root=repo, provider="qemu", os_name="win11").layered_var_files()
    missing = tmp_path / "nope.pkrvars.hcl"
    with pytest.raises(ImageBuildError, match=r"nope\.pkrvars\.hcl does not exist"):
        BuildPlan(root=repo, provider="qemu", var_files=[missing]).layered_var_files()


def test_an_ec2_build_records_every_region_and_a_rerun_is_a_no_op(
    repo: Path, tmp_path: Path, packer: Packer
) -> None:
    manifest_path = tmp_path / "manifest.json"
    plan = BuildPlan(root=repo, provider="ec2")
    first = build(plan, packer, manifest_path)
    assert first.decision.build
    assert first.decision.reason.startswith("no ec2 in us-east-1 image")
    assert [(r.region, r.image) for r in first.records] == [
        ("us-east-1", "ami-0123"),
        ("eu-west-1", "ami-0456"),
    ]
    manifest = Manifest.load(manifest_path)
    assert manifest.latest("ec2", "us-east-1").packer_version == "1.6.6"  # type: ignore[union-attr]
    argv = _argv(tmp_path)
    assert "-only=amazon-ebs.glidein" in argv
    assert argv.index("-var-file=" + str(repo / "images/os/debian12.pkrvars.hcl")) < argv.index(
        "-var-file=" + str(repo / "images/providers/ec2.pkrvars.hcl")
    )

    again = build(plan, packer, manifest_path)
    assert not again.decision.build
    assert "is up to date: inputs unchanged" in again.decision.reason
    assert "use --force to rebuild" in again.decision.reason
    assert _builds_run(tmp_path) == 1

    forced = build(plan, packer, manifest_path, force=True)
    assert forced.decision.reason == "--force given"
    assert _builds_run(tmp_path) == 2
    assert "-force" in _argv(tmp_path)


def test_a_changed_role_triggers_a_rebuild_that_names_it(
    repo: Path, tmp_path: Path, packer: Packer
) -> None:
    manifest_path = tmp_path / "manifest.json"
    plan = BuildPlan(root=repo, provider="openstack", region="RegionOne")
    build(plan, packer, manifest_path)
    (repo / "roles/glidein_base/tasks/main.yml").write_text("- name: two\n")
    second = build(plan, packer, manifest_path)
    assert second.decision.build
    assert second.decision.reason.endswith(": roles/glidein_base/tasks/main.yml")
    assert second.records[0].image == "1b7c0c7e-glance"
    assert _builds_run(tmp_path) == 2


def test_a_qemu_image_that_was_deleted_is_rebuilt(
    repo: Path, tmp_path: Path, packer: Packer
) -> None:
    manifest_path = tmp_path / "manifest.json"
    plan = BuildPlan(
        root=repo, provider="qemu", qemu_source="var-files", output_root=tmp_path / "artifacts"
    )
    [record] = build(plan, packer, manifest_path).records
    assert Path(record.image).is_file()
    assert build(plan, packer, manifest_path).decision.build is False
    Path(record.image).unlink()
    decision = build(plan, packer, manifest_path).decision
    assert decision.build
    assert "is gone" in decision.reason


def _extract_iso(iso: Path, into: Path) -> str:
    """The ISO's files under `into`; returns its volume id."""
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(into)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    info = subprocess.run(
        ["xorriso", "-indev", str(iso), "-pvd_info"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return next(
        line.split(":", 1)[1].strip()
        for line in (info.stdout + info.stderr).splitlines()
        if line.startswith("Volume Id")
    )


@pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso (make test installs it)")
def test_a_cloud_image_build_gets_a_nocloud_seed_with_the_build_key(
    repo: Path, tmp_path: Path, packer: Packer
) -> None:
    plan = BuildPlan(
        root=repo, provider="qemu", qemu_source="var-files", output_root=tmp_path / "artifacts"
    )
    build(plan, packer, tmp_path / "manifest.json")

    variables = dict(a[5:].split("=", 1) for a in _argv(tmp_path) if a.startswith("-var="))
    key_file = tmp_path / "image-cache" / "build-key"
    assert variables["ssh_private_key_file"] == str(key_file)
    assert "qemu_kernel" not in variables  # the cloud image boots with its own bootloader
    assert not Path(variables["qemu_seed_iso"]).exists(), "the seed outlives the build"
    files = tmp_path / "seed"
    assert _extract_iso(tmp_path / "seed-seen.iso", files) == "cidata"
    user_data = (files / "user-data").read_text()
    assert user_data.startswith("#cloud-config\n")
    [login] = yaml.safe_load(user_data)["users"]
    assert login["name"] == "debian"  # ssh_username of images/os/debian12.pkrvars.hcl
    assert login["ssh_authorized_keys"] == [Path(f"{key_file}.pub").read_text().strip()]
    assert login["lock_passwd"] is True
    meta = yaml.safe_load((files / "meta-data").read_text())
    assert meta["instance-id"].startswith("gwms-image-build-")


def test_a_seed_without_xorriso_or_login_user_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "build-key.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG test\n")
    if shutil.which("xorriso"):
        with pytest.raises(SeedError, match="set ssh_username in the OS var file"):
            seed.write(tmp_path / "seed.iso", user="", public_key_file=key)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SeedError, match="apt install xorriso"):
        seed.write(tmp_path / "seed.iso", user="debian", public_key_file=key)


def test_a_failed_packer_build_records_nothing(
    repo: Path, tmp_path: Path, packer: Packer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PACKER_FAIL", "1")
    manifest_path = tmp_path / "manifest.json"
    cause = r"build of ec2 failed \(exit 1\): fatal: \[default\]: FAILED! => no package"
    with pytest.raises(ImageBuildError, match=cause):
        build(BuildPlan(root=repo, provider="ec2"), packer, manifest_path)
    assert not manifest_path.exists()


def test_the_debootstrap_source_is_only_debian(repo: Path, packer: Packer, tmp_path: Path) -> None:
    plan = BuildPlan(root=repo, provider="qemu", os_name="el9")
    with pytest.raises(ImageBuildError, match="source disk is Debian 12, not el9"):
        build(plan, packer, tmp_path / "manifest.json")


def test_the_cli_prints_progress_then_why_nothing_was_done(
    repo: Path, tmp_path: Path, packer: Packer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "image",
        "build",
        "--root",
        str(repo),
        "--provider",
        "ec2",
        "--packer",
        packer.binary,
        "--manifest",
        str(tmp_path / "m.json"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Provisioning with Ansible" in out
    assert "built ec2 (us-east-1): ami-0123" in out
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("nothing to do: ec2 in us-east-1 image ami-0123")

    assert (
        main(["image", "status", "--root", str(repo), "--manifest", str(tmp_path / "m.json")]) == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["PROVIDER", "REGION", "BUILT", "(UTC)", "CURRENT", "IMAGE"]
    assert {tuple(line.split()[i] for i in (0, 1, 3, 4)) for line in table[1:]} == {
        ("ec2", "us-east-1", "yes", "ami-0123"),
        ("ec2", "eu-west-1", "yes", "ami-0456"),
    }


def test_status_of_an_empty_manifest_exits_3(tmp_path: Path, repo: Path) -> None:
    assert (
        main(["image", "status", "--root", str(repo), "--manifest", str(tmp_path / "no.json")]) == 3
    )


def test_a_malformed_var_flag_is_a_usage_error(repo: Path) -> None:
    assert (
        main(["image", "build", "--root", str(repo), "--provider", "qemu", "--var", "novalue"]) == 2
    )
