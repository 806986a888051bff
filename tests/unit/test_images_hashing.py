"""The input hash: every input of the image counts, caches and outputs do not."""

from __future__ import annotations

from pathlib import Path

from gwms.images.hashing import content_hash, input_files


def _repo(root: Path) -> Path:
    files = {
        "images/variables.pkr.hcl": 'variable "x" {}\n',
        "images/scripts/make-source-disk.sh": "#!/bin/sh\n",
        "playbooks/image.yml": "- hosts: all\n",
        "roles/glidein_base/tasks/main.yml": "- name: x\n",
        "contextualization/gwms_context/bootstrap.py": "print(1)\n",
        "gwms/not_an_input.py": "x = 1\n",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_hash_is_stable_and_independent_of_where_the_repo_lives(tmp_path: Path) -> None:
    first = content_hash(_repo(tmp_path / "a"), provider="qemu")
    again = content_hash(tmp_path / "a", provider="qemu")
    elsewhere = content_hash(_repo(tmp_path / "b"), provider="qemu")
    assert first.digest == again.digest == elsewhere.digest


def test_a_changed_role_changes_the_hash_and_is_named(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    before = content_hash(root, provider="qemu")
    (root / "roles/glidein_base/tasks/main.yml").write_text("- name: y\n")
    after = content_hash(root, provider="qemu")
    assert after.digest != before.digest
    assert after.changed_since(before.inputs) == ["roles/glidein_base/tasks/main.yml"]


def test_added_and_removed_files_are_named(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    before = content_hash(root, provider="qemu")
    (root / "contextualization/gwms_context/new.py").write_text("")
    (root / "playbooks/image.yml").unlink()
    after = content_hash(root, provider="qemu")
    assert after.changed_since(before.inputs) == [
        "contextualization/gwms_context/new.py",
        "playbooks/image.yml",
    ]


def test_losing_the_executable_bit_changes_the_hash(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    script = root / "images/scripts/make-source-disk.sh"
    script.chmod(0o755)
    before = content_hash(root, provider="qemu")
    script.chmod(0o644)
    assert content_hash(root, provider="qemu").digest != before.digest


def test_caches_outputs_and_the_manifest_are_not_inputs(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    before = content_hash(root, provider="qemu")
    for name in (
        "images/manifest.json",
        "images/output-qemu/disk.qcow2",
        "images/packer_cache/x.iso",
        "contextualization/gwms_context/__pycache__/bootstrap.cpython-311.pyc",
        "roles/glidein_base/.molecule/state.yml",
        "gwms/other.py",
    ):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("noise")
    assert content_hash(root, provider="qemu").digest == before.digest
    listed = {p.relative_to(root).as_posix() for p in input_files(root)}
    assert "images/manifest.json" not in listed
    assert "gwms/not_an_input.py" not in listed


def test_provider_var_files_and_variables_are_inputs(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    site = tmp_path / "site.pkrvars.hcl"
    site.write_text('region = "eu-west-1"\n')
    base = content_hash(root, provider="ec2", var_files=[site])
    assert content_hash(root, provider="openstack", var_files=[site]).digest != base.digest
    assert content_hash(root, provider="ec2").digest != base.digest
    with_var = content_hash(root, provider="ec2", var_files=[site], variables={"a": "1"})
    assert with_var.digest != base.digest
    assert with_var.changed_since(base.inputs) == ["var:a"]
    site.write_text('region = "us-east-1"\n')
    assert content_hash(root, provider="ec2", var_files=[site]).digest != base.digest
