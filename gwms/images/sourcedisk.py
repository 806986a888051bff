"""The local qemu source disk (debootstrap), cached outside git under the hash of its inputs.

Where no cloud image can be downloaded, `images/scripts/make-source-disk.sh` makes a
Debian root file system (`tree`, minutes) and packs it into a qcow2 with the build's SSH
key (`disk`, seconds). Each step is cached under `~/.cache/gwms-cloud/images/` (or
$GWMS_IMAGE_CACHE) keyed by the hash of what it was made from, so a second build reuses
both and a change to the script remakes them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gwms.errors import GwmsError
from gwms.images.hashing import file_digest

SCRIPT = Path("images/scripts/make-source-disk.sh")
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SIZE = "3G"
KEY_NAME = "build-key"


class SourceDiskError(GwmsError):
    """The source disk could not be made."""


@dataclass(frozen=True)
class SourceDisk:
    """A bootable qcow2 without bootloader, its kernel and initrd, and the key root accepts."""

    directory: Path
    key_file: Path
    cache_key: str

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def sha256(self) -> str:
        return (self.directory / "disk.qcow2.sha256").read_text().split()[0]

    def exists(self) -> bool:
        return all(p.is_file() for p in (self.disk, self.kernel, self.initrd, self.key_file))


def cache_dir() -> Path:
    """$GWMS_IMAGE_CACHE, else ~/.cache/gwms-cloud/images."""
    env = os.environ.get("GWMS_IMAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gwms-cloud" / "images"


def build_key(cache: Path) -> Path:
    """The SSH key Packer and Ansible log in with (ed25519, created 0600 once per cache)."""
    private = cache / KEY_NAME
    if not private.exists():
        cache.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(pem)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        (cache / f"{KEY_NAME}.pub").write_bytes(public + b" gwms-image-build\n")
    return private


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def tree_key(script: Path, suite: str, mirror: str) -> str:
    return _key("tree", file_digest(script), suite, mirror)


def planned(
    root: Path,
    cache: Path | None = None,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    size: str = DEFAULT_SIZE,
) -> SourceDisk:
    """Where the source disk for these inputs lives (made or not)."""
    cache = cache or cache_dir()
    script = root / SCRIPT
    public = cache / f"{KEY_NAME}.pub"
    pub_digest = file_digest(public) if public.exists() else "no-key-yet"
    disk_key = _key("disk", tree_key(script, suite, mirror), pub_digest, size, file_digest(script))
    return SourceDisk(
        directory=cache / f"disk-{disk_key}", key_file=cache / KEY_NAME, cache_key=disk_key
    )


def ensure(
    root: Path,
    cache: Path | None = None,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    size: str = DEFAULT_SIZE,
    progress: Callable[[str], None] = lambda _line: None,
) -> SourceDisk:
    """The source disk, made (tree, then disk) only when its cached copy is missing."""
    cache = cache or cache_dir()
    build_key(cache)
    script = root / SCRIPT
    source = planned(root, cache, suite=suite, mirror=mirror, size=size)
    if source.exists():
        progress(f"source disk: cached {source.directory}")
        return source
    if os.geteuid() != 0:
        raise SourceDiskError(
            f"the source disk {source.directory} is not cached and debootstrap needs root;"
            " run this build once as root (or with sudo), or give qemu_source in a var file"
        )
    tree = cache / f"tree-{tree_key(script, suite, mirror)}"
    if not (tree / "etc").is_dir():
        progress(f"source disk: debootstrap {suite} into {tree} (a few minutes, once)")
        _run([str(script), "tree", str(tree), suite, mirror], progress)
        _prune(cache, "tree-", keep=tree)
    progress(f"source disk: packing {tree.name} into {source.directory}")
    _run(
        [str(script), "disk", str(tree), str(source.directory), f"{source.key_file}.pub", size],
        progress,
    )
    _prune(cache, "disk-", keep=source.directory)
    return source


def _run(argv: list[str], progress: Callable[[str], None]) -> None:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        tail = [*tail[-19:], line]
        if not line.startswith(("I: Retrieving", "I: Validating", "I: Unpacking", "I: Extracting")):
            progress(f"  {line}")
    if proc.wait() != 0:
        raise SourceDiskError(
            f"{argv[0]} {argv[1]} failed (exit {proc.returncode}): {' | '.join(tail[-3:])};"
            " fix the cause and rerun the build"
        )


def _prune(cache: Path, prefix: str, keep: Path) -> None:
    """Drop cached trees or disks of older inputs (each is hundreds of MB)."""
    for path in cache.glob(f"{prefix}*"):
        if path != keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
