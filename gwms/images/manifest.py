"""The image manifest: which image each provider and region has, built from which inputs.

`images/manifest.json` (or a path given) keeps Packer's manifest shape — a `builds` list
whose items have `name` (our provider name) and `artifact_id` — so tools reading Packer
manifests still work, and adds our fields: region, the image to launch, the input hash
and per-input digests (so a rebuild can say why), Packer version and build time. The
factory resolves `image: {latest: <provider>}` with `latest_image`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gwms.errors import GwmsError

FORMAT = 1
# Older builds kept per provider and region, for rollback by hand.
KEEP_PER_KEY = 20


class ManifestError(GwmsError):
    """The manifest is unreadable, or holds no image for what was asked."""


@dataclass
class ImageRecord:
    """One built image of one provider in one region (qemu: region `local`)."""

    name: str
    region: str
    image: str
    artifact_id: str
    input_hash: str
    packer_version: str
    built_at: int
    os: str = ""
    builder_type: str = ""
    files: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    duration_seconds: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.region)

    @property
    def built_at_iso(self) -> str:
        return datetime.fromtimestamp(self.built_at, UTC).isoformat(timespec="seconds")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["built_at_iso"] = self.built_at_iso
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageRecord:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Manifest:
    """The builds recorded at `path`, oldest first."""

    path: Path
    builds: list[ImageRecord] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest at `path`; an absent file is an empty manifest."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path=path)
        except (OSError, ValueError) as exc:
            raise ManifestError(
                f"image manifest {path} is unreadable ({exc}); fix or remove it and rebuild"
            ) from None
        try:
            builds = [ImageRecord.from_json(item) for item in raw.get("builds", [])]
        except (TypeError, AttributeError) as exc:
            raise ManifestError(
                f"image manifest {path} has a malformed build entry ({exc}); fix or remove it"
            ) from None
        return cls(path=path, builds=builds)

    def save(self) -> None:
        """Write atomically (temp file in the same directory, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"format": FORMAT, "builds": [b.to_json() for b in self.builds]}
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                json.dump(document, stream, indent=2, sort_keys=True)
                stream.write("\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, record: ImageRecord) -> None:
        """Append `record`; older builds of its key keep no per-input digests, and only
        the newest KEEP_PER_KEY of a key are kept."""
        same = [b for b in self.builds if b.key == record.key]
        for old in same:
            old.inputs = {}
        drop = {id(b) for b in same[: max(0, len(same) + 1 - KEEP_PER_KEY)]}
        self.builds = [b for b in self.builds if id(b) not in drop] + [record]

    def latest(self, name: str, region: str | None = None) -> ImageRecord | None:
        """The newest build of provider `name` (in `region` when given)."""
        found = [
            b for b in self.builds if b.name == name and (region is None or b.region == region)
        ]
        return max(found, key=lambda b: b.built_at, default=None)

    def regions(self, name: str) -> list[str]:
        return sorted({b.region for b in self.builds if b.name == name})


def latest_image(path: Path | str, provider: str, region: str | None = None) -> str:
    """The image to launch for `image: {latest: provider}`: AMI id, Glance id or qcow2 path.

    Without `region`, the provider must have builds in one region only, so an entry never
    launches an AMI of another region by accident.
    """
    manifest = Manifest.load(Path(path))
    if region is None:
        regions = manifest.regions(provider)
        if len(regions) > 1:
            raise ManifestError(
                f"image manifest {path} has {provider} images in regions {', '.join(regions)};"
                " give the entry's region"
            )
    record = manifest.latest(provider, region)
    if record is None:
        where = f" in region {region}" if region else ""
        raise ManifestError(
            f"image manifest {path} has no {provider} image{where};"
            f" run `gwms image build --provider {provider}` or give an image id"
        )
    return record.image


def records_from_artifact(
    provider: str,
    artifact_id: str,
    files: list[str],
    *,
    default_region: str,
) -> list[tuple[str, str, str]]:
    """(region, image, artifact id) for each image a Packer artifact names.

    amazon-ebs ids are `region:ami-...` joined by commas (one per copied region); other
    builders give one id (OpenStack: the Glance id) or, like qemu, name only files.
    """
    if provider == "ec2":
        found = []
        for part in artifact_id.split(","):
            region, _, ami = part.strip().rpartition(":")
            if ami:
                found.append((region or default_region, ami, part.strip()))
        return found
    if files and provider == "qemu":
        # Packer's qemu id is "VM"; the qcow2 path is what a local cloud launches.
        path = str(Path(files[0]).resolve())
        return [(default_region, path, path)]
    return [(default_region, artifact_id, artifact_id)]
