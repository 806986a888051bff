"""The NoCloud seed that lets Packer log in to a distribution's cloud image.

A generic cloud image has no password and no key: at first boot cloud-init looks for a
datasource, and a drive labelled `cidata` holding `user-data` and `meta-data` is one
(NoCloud). The seed gives the image's login user the build key, so Packer and Ansible can
connect over SSH. The build removes the key before the image is saved (images/build.pkr.hcl)
and sysprep removes cloud-init's state, so each VM launched later runs cloud-init afresh
with its own cloud's data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from gwms.errors import GwmsError

LABEL = "cidata"
HOSTNAME = "gwms-image-build"


class SeedError(GwmsError):
    """The seed ISO could not be made."""


def user_data(user: str, public_key: str) -> str:
    """cloud-config: one sudo user that logs in with the build key only.

    JSON is YAML, so no YAML library is needed and the key is quoted whatever it holds.
    """
    login = {
        "name": user,
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "shell": "/bin/bash",
        "lock_passwd": True,
        "ssh_authorized_keys": [public_key.strip()],
    }
    config = {"users": [login], "ssh_pwauth": False, "disable_root": True}
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def meta_data(public_key: str) -> str:
    """A stable instance id per key: cloud-init runs its per-instance modules once."""
    instance = "gwms-image-build-" + hashlib.sha256(public_key.encode()).hexdigest()[:12]
    return json.dumps({"instance-id": instance, "local-hostname": HOSTNAME}) + "\n"


def write(iso: Path, *, user: str, public_key_file: Path) -> Path:
    """Write the seed ISO (label cidata) for `user` with the key in `public_key_file`."""
    xorriso = shutil.which("xorriso")
    if xorriso is None:
        raise SeedError(
            "xorriso is missing, and a qemu build from a cloud image needs it to make the"
            " NoCloud seed; install it (Debian/Ubuntu: apt install xorriso; EL: dnf install"
            " xorriso)"
        )
    if not user:
        raise SeedError(
            "no login user for the cloud image; set ssh_username in the OS var file"
            " (images/os/*.pkrvars.hcl) or pass --var ssh_username=NAME"
        )
    public_key = public_key_file.read_text()
    iso.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gwms-seed-") as staging:
        Path(staging, "user-data").write_text(user_data(user, public_key))
        Path(staging, "meta-data").write_text(meta_data(public_key))
        done = subprocess.run(
            [xorriso, "-as", "mkisofs", "-quiet", "-volid", LABEL, "-joliet", "-rock",
             "-output", str(iso), staging],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise SeedError(
            f"xorriso could not write the NoCloud seed {iso}: {why[-1] if why else 'no output'};"
            " check that the directory is writable"
        )
    return iso
