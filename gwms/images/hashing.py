"""The content hash that decides whether an image must be rebuilt.

It covers every input of a build: the Packer templates and var files under `images/`,
the playbooks and roles Packer runs, `contextualization/` (installed on the image), the
operator's own var files, and the provider and `-var` values. Per-file digests are kept
too, so a rebuild can say which inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Directories of the repository that go into the image (relative to the repo root).
INPUT_DIRS = ("images", "playbooks", "roles", "contextualization")
# Never inputs: caches, build outputs, the manifest the build itself writes.
SKIP_DIR_NAMES = frozenset(
    {
        "__pycache__",
        ".pytest_cache",
        ".ruff_cache",
        ".molecule",
        "molecule",
        ".cache",
        ".git",
        ".tox",
    }
)
SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", "~")
SKIP_FILE_NAMES = frozenset({"manifest.json", ".DS_Store"})
SKIP_DIR_PREFIXES = ("output-", "packer_cache")


@dataclass(frozen=True)
class InputHash:
    """The overall hash and the digest of each input (repo-relative path or `var:NAME`)."""

    digest: str
    inputs: Mapping[str, str]

    def changed_since(self, previous: Mapping[str, str]) -> list[str]:
        """Inputs added, removed or modified since `previous` (sorted)."""
        keys = set(self.inputs) | set(previous)
        return sorted(k for k in keys if self.inputs.get(k) != previous.get(k))


def input_files(root: Path, dirs: Sequence[str] = INPUT_DIRS) -> list[Path]:
    """Every input file under `root`'s input directories, sorted, caches and outputs left out."""
    found: list[Path] = []
    for name in dirs:
        top = root / name
        if not top.is_dir():
            continue
        for current, subdirs, files in os.walk(top):
            subdirs[:] = sorted(
                d
                for d in subdirs
                if d not in SKIP_DIR_NAMES and not d.startswith(SKIP_DIR_PREFIXES)
            )
            for file_name in files:
                if file_name in SKIP_FILE_NAMES or file_name.endswith(SKIP_SUFFIXES):
                    continue
                path = Path(current) / file_name
                if path.is_file():
                    found.append(path)
    return sorted(found)


def file_digest(path: Path) -> str:
    """sha256 of the content, with the executable bit (a script losing +x changes the image)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    mode = "x" if os.access(path, os.X_OK) else "-"
    return f"{digest.hexdigest()}{mode}"


def content_hash(
    root: Path,
    *,
    provider: str,
    var_files: Iterable[Path] = (),
    variables: Mapping[str, str] | None = None,
    dirs: Sequence[str] = INPUT_DIRS,
) -> InputHash:
    """Hash of every input of a build of `provider` from the repository at `root`."""
    root = root.resolve()
    inputs: dict[str, str] = {"provider": provider}
    for path in input_files(root, dirs):
        inputs[path.relative_to(root).as_posix()] = file_digest(path)
    for path in var_files:
        resolved = path.resolve()
        try:
            key = resolved.relative_to(root).as_posix()
        except ValueError:
            key = f"var-file:{resolved}"
        inputs[key] = file_digest(resolved)
    for name, value in sorted((variables or {}).items()):
        inputs[f"var:{name}"] = hashlib.sha256(value.encode()).hexdigest()
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return InputHash(digest=hashlib.sha256(canonical).hexdigest(), inputs=inputs)
