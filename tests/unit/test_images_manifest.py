"""The image manifest: records per provider and region, the newest wins, and the factory
resolves `image: {latest: provider}` from it."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from gwms.config.factory import LatestImage
from gwms.factory.daemon import resolve_image
from gwms.images.manifest import (
    KEEP_PER_KEY,
    ImageRecord,
    Manifest,
    ManifestError,
    latest_image,
    records_from_artifact,
)


def _record(name: str, region: str, image: str, at: int, **extra: object) -> ImageRecord:
    artifact = f"{region}:{image}" if name == "ec2" else image
    return ImageRecord(name=name, region=region, image=image, artifact_id=artifact,
                       input_hash="h" * 64, packer_version="1.6.6", built_at=at,
                       **extra)  # type: ignore[arg-type]  # fmt: skip


def test_records_survive_a_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "manifest.json"
    manifest = Manifest(path)
    manifest.add(_record("qemu", "local", "/img/a.qcow2", 100, inputs={"x": "1"}))
    manifest.save()
    loaded = Manifest.load(path)
    assert loaded.builds == manifest.builds
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text())["builds"][0]["built_at_iso"] == "1970-01-01T00:01:40+00:00"


def test_the_newest_build_of_the_region_is_the_latest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest = Manifest(path)
    manifest.add(_record("ec2", "us-east-1", "ami-old", 100))
    manifest.add(_record("ec2", "eu-west-1", "ami-eu", 300))
    manifest.add(_record("ec2", "us-east-1", "ami-new", 200))
    manifest.save()
    assert latest_image(path, "ec2", "us-east-1") == "ami-new"
    assert latest_image(path, "ec2", "eu-west-1") == "ami-eu"


def test_without_a_region_several_regions_are_an_error_not_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest = Manifest(path)
    manifest.add(_record("ec2", "us-east-1", "ami-1", 100))
    manifest.add(_record("ec2", "eu-west-1", "ami-2", 200))
    manifest.save()
    with pytest.raises(
        ManifestError, match="regions eu-west-1, us-east-1; give the entry's region"
    ):
        latest_image(path, "ec2")


def test_a_provider_never_built_says_how_to_build_it(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    with pytest.raises(ManifestError, match=r"no openstack image; run `gwms image build"):
        latest_image(path, "openstack")


def test_a_corrupt_manifest_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("{not json")
    with pytest.raises(ManifestError, match=r"is unreadable .*; fix or remove it and rebuild"):
        Manifest.load(path)


def test_old_builds_are_trimmed_and_lose_their_input_digests(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "m.json")
    for at in range(KEEP_PER_KEY + 5):
        manifest.add(_record("qemu", "local", f"/img/{at}", at, inputs={"f": str(at)}))
    manifest.add(_record("openstack", "", "glance-1", 1, inputs={"f": "x"}))
    qemu = [b for b in manifest.builds if b.name == "qemu"]
    assert len(qemu) == KEEP_PER_KEY
    assert qemu[-1].image == f"/img/{KEEP_PER_KEY + 4}"
    assert [b.inputs for b in qemu[:-1]] == [{}] * (KEEP_PER_KEY - 1)
    assert qemu[-1].inputs == {"f": str(KEEP_PER_KEY + 4)}
    assert manifest.latest("openstack") is not None
    assert manifest.latest("openstack").inputs == {"f": "x"}  # type: ignore[union-attr]


def test_an_ami_copied_to_two_regions_makes_two_records() -> None:
    found = records_from_artifact("ec2", "us-east-1:ami-1,eu-west-1:ami-2", [],
                                  default_region="us-east-1")  # fmt: skip
    assert found == [
        ("us-east-1", "ami-1", "us-east-1:ami-1"),
        ("eu-west-1", "ami-2", "eu-west-1:ami-2"),
    ]


def test_a_qemu_image_is_its_qcow2_path(tmp_path: Path) -> None:
    qcow2 = tmp_path / "out" / "x.qcow2"
    [(region, image, artifact_id)] = records_from_artifact(
        "qemu", "VM", [str(qcow2)], default_region="local"
    )
    assert (region, image, artifact_id) == ("local", str(qcow2), str(qcow2))


def test_the_factory_daemon_reads_our_manifest(tmp_path: Path) -> None:
    """The factory's own resolver (today's code path) launches what we recorded."""
    path = tmp_path / "manifest.json"
    manifest = Manifest(path)
    manifest.add(_record("ec2", "us-east-1", "ami-0abc", 100))
    manifest.add(_record("openstack", "RegionOne", "5f0c-glance", 200))
    manifest.save()
    for provider, expected in (("ec2", "ami-0abc"), ("openstack", "5f0c-glance")):
        entry = SimpleNamespace(name="e1", image=LatestImage(latest=provider, manifest=str(path)))
        assert resolve_image(entry) == expected  # type: ignore[arg-type]
        assert latest_image(path, provider) == expected
