"""The rebuild pipeline: layer the var files, skip builds whose inputs did not change,
run Packer for one provider, and record the image in the manifest.

Variables layer like kubernetes-sigs/image-builder: template defaults, then
`images/os/<os>.pkrvars.hcl`, `images/providers/<provider>.pkrvars.hcl`, the operator's
var files, then `-var` values (what `gwms image build --var` passes).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gwms.errors import GwmsError
from gwms.images import seed, sourcedisk
from gwms.images.hashing import InputHash, content_hash
from gwms.images.manifest import ImageRecord, Manifest, records_from_artifact
from gwms.images.packer import Packer, PackerEvent, PackerRun

# Our provider names and the Packer source (builder type) each one builds.
BUILDERS = {"ec2": "amazon-ebs", "openstack": "openstack", "qemu": "qemu"}
SOURCE_NAME = "glidein"
QEMU_REGION = "local"
OSES = ("debian12", "el9")
# Changed inputs listed when explaining a rebuild.
WHY_LIMIT = 8


class ImageBuildError(GwmsError):
    """A build could not start or Packer failed."""


@dataclass
class BuildPlan:
    """Everything one Packer run of one provider takes."""

    root: Path
    provider: str
    os_name: str = "debian12"
    var_files: list[Path] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    ansible_vars_files: list[Path] = field(default_factory=list)
    region: str | None = None
    qemu_source: str = "debootstrap"  # or "var-files": the var files name the source
    output_root: Path | None = None

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def only(self) -> str:
        return f"{BUILDERS[self.provider]}.{SOURCE_NAME}"

    def layered_var_files(self) -> list[Path]:
        """OS file, provider file, then the operator's files (later ones win)."""
        if self.provider not in BUILDERS:
            raise ImageBuildError(
                f"unknown provider {self.provider!r}; choose one of {', '.join(BUILDERS)}"
            )
        if self.os_name not in OSES:
            raise ImageBuildError(
                f"unknown OS {self.os_name!r}; choose one of {', '.join(OSES)}"
                " or add images/os/<name>.pkrvars.hcl"
            )
        files = [
            self.images_dir / "os" / f"{self.os_name}.pkrvars.hcl",
            self.images_dir / "providers" / f"{self.provider}.pkrvars.hcl",
        ]
        for path in self.var_files:
            if not path.is_file():
                raise ImageBuildError(f"var file {path} does not exist; check --var-file")
        return files + list(self.var_files)

    def resolved_region(self) -> str:
        """--region, else the last `region = "..."` in the var files; qemu is `local`."""
        if self.provider == "qemu":
            return QEMU_REGION
        if self.region:
            return self.region
        return self.variable("region")

    def variable(self, name: str) -> str:
        """A string variable as Packer will see it: --var, else the last var file setting it.

        Only `name = "value"` lines are read: enough for the few values the wrapper needs
        (region, ssh_username) without an HCL parser.
        """
        if name in self.variables:
            return self.variables[name]
        found = ""
        pattern = re.compile(rf'^\s*{re.escape(name)}\s*=\s*"([^"]*)"', re.M)
        for path in self.layered_var_files():
            for match in pattern.finditer(path.read_text()):
                found = match.group(1)
        return found

    def user_variables(self) -> dict[str, str]:
        """The -var values that are inputs of the image (hashed), our own included."""
        values = dict(self.variables)
        if self.region:
            values["region"] = self.region
        return values

    def input_hash(self) -> InputHash:
        extra = {**self.user_variables(), "os": self.os_name}
        if self.provider == "qemu":
            extra["qemu_source"] = self.qemu_source
        files = self.layered_var_files() + self.ansible_vars_files
        return content_hash(self.root, provider=self.provider, var_files=files, variables=extra)


@dataclass
class Decision:
    """Whether to build, and why, in one line for the operator."""

    build: bool
    reason: str
    previous: ImageRecord | None = None


def decide(plan: BuildPlan, manifest: Manifest, current: InputHash, *, force: bool) -> Decision:
    """Build unless the newest image of this provider and region has the same input hash."""
    region = plan.resolved_region()
    previous = manifest.latest(plan.provider, region)
    where = f"{plan.provider}" + (f" in {region}" if region else "")
    if previous is None:
        return Decision(True, f"no {where} image in {manifest.path} yet")
    if force:
        return Decision(True, "--force given", previous)
    if previous.input_hash != current.digest:
        changed = current.changed_since(previous.inputs) if previous.inputs else []
        shown = ", ".join(changed[:WHY_LIMIT]) + (" ..." if len(changed) > WHY_LIMIT else "")
        detail = f": {shown}" if changed else ""
        return Decision(
            True, f"inputs changed since the build of {previous.built_at_iso}{detail}", previous
        )
    if plan.provider == "qemu" and not Path(previous.image).is_file():
        return Decision(True, f"the recorded image {previous.image} is gone", previous)
    return Decision(
        False,
        f"{where} image {previous.image} is up to date: inputs unchanged since its build at"
        f" {previous.built_at_iso} (hash {current.digest[:12]}); use --force to rebuild",
        previous,
    )


@dataclass(frozen=True)
class CloudImageLogin:
    """How Packer logs in to a cloud image source: the NoCloud seed and the key it carries."""

    seed_iso: Path
    key_file: Path


def packer_variables(
    plan: BuildPlan,
    *,
    for_validate: bool = False,
    source: sourcedisk.SourceDisk | None = None,
    login: CloudImageLogin | None = None,
) -> dict[str, str]:
    """-var values: the operator's, then what this machine needs (ansible, qemu source)."""
    values: dict[str, str] = {}
    ansible = Path(sys.executable).parent / "ansible-playbook"
    if ansible.is_file():
        values["ansible_playbook"] = str(ansible)
    values.update(plan.user_variables())
    if plan.ansible_vars_files:
        values["ansible_vars_files"] = json.dumps(
            [str(p.resolve()) for p in plan.ansible_vars_files]
        )
    if plan.provider != "qemu":
        return values
    if plan.qemu_source == "debootstrap":
        source = source or sourcedisk.planned(plan.root)
        values.update(
            qemu_source=str(source.disk),
            qemu_source_checksum="none" if for_validate else f"sha256:{source.sha256}",
            qemu_kernel=str(source.kernel),
            qemu_initrd=str(source.initrd),
            ssh_username="root",
        )
        if not for_validate:
            values["ssh_private_key_file"] = str(source.key_file)
    elif login is not None:
        values["qemu_seed_iso"] = str(login.seed_iso)
        values["ssh_private_key_file"] = str(login.key_file)
    return values


def validate(plan: BuildPlan, packer: Packer) -> PackerRun:
    """`packer validate` of the plan's source with its layered var files."""
    return packer.validate(
        plan.images_dir,
        var_files=plan.layered_var_files(),
        variables=packer_variables(plan, for_validate=True),
        only=[plan.only],
    )


@dataclass
class BuildOutcome:
    decision: Decision
    records: list[ImageRecord] = field(default_factory=list)
    run: PackerRun | None = None
    seconds: float = 0.0


def build(
    plan: BuildPlan,
    packer: Packer,
    manifest_path: Path,
    *,
    force: bool = False,
    on_event: Callable[[PackerEvent], None] | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> BuildOutcome:
    """Build when the inputs changed (or `force`), then record the image in the manifest."""
    started = time.monotonic()
    manifest = Manifest.load(manifest_path)
    current = plan.input_hash()
    decision = decide(plan, manifest, current, force=force)
    if not decision.build:
        return BuildOutcome(decision, seconds=time.monotonic() - started)
    progress(f"building {plan.provider}: {decision.reason}")
    version = packer.version()
    source = None
    if plan.provider == "qemu" and plan.qemu_source == "debootstrap":
        if plan.os_name != "debian12":
            raise ImageBuildError(
                f"the debootstrap source disk is Debian 12, not {plan.os_name}; build"
                " --os debian12, or use --qemu-source var-files with a cloud image"
            )
        source = sourcedisk.ensure(plan.root, progress=progress)
    with tempfile.TemporaryDirectory(prefix="gwms-image-") as scratch:
        login = None
        if plan.provider == "qemu" and plan.qemu_source != "debootstrap":
            login = cloud_image_login(plan, Path(scratch), progress)
        variables = packer_variables(plan, source=source, login=login)
        run = _run_packer(plan, packer, variables, current.digest, force=force, on_event=on_event)
    if not run.ok:
        last = _first_cause(run) or "see the output above"
        raise ImageBuildError(
            f"packer build of {plan.provider} failed (exit {run.returncode}): {last};"
            " fix the cause and rerun `gwms image build`"
        )
    extra_files = _keep_boot_files(source, variables.get("qemu_output_directory"))
    elapsed = time.monotonic() - started
    records = _records(plan, run, current, version, elapsed)
    for record in records:
        record.files += extra_files
    if not records:
        raise ImageBuildError(
            f"packer build of {plan.provider} reported no artifact; nothing was recorded in"
            f" {manifest_path}"
        )
    for record in records:
        manifest.add(record)
    manifest.save()
    return BuildOutcome(decision, records, run, elapsed)


def cloud_image_login(
    plan: BuildPlan, scratch: Path, progress: Callable[[str], None]
) -> CloudImageLogin:
    """The build key and a NoCloud seed giving it to the cloud image's login user."""
    key_file = sourcedisk.build_key(sourcedisk.cache_dir())
    user = plan.variable("ssh_username")
    iso = seed.write(scratch / "seed.iso", user=user, public_key_file=Path(f"{key_file}.pub"))
    progress(f"cloud image login: NoCloud seed for user {user!r} with the build key ({iso})")
    return CloudImageLogin(seed_iso=iso, key_file=key_file)


def _run_packer(
    plan: BuildPlan,
    packer: Packer,
    variables: dict[str, str],
    digest: str,
    *,
    force: bool,
    on_event: Callable[[PackerEvent], None] | None,
) -> PackerRun:
    if plan.provider == "qemu":
        output_root = plan.output_root or sourcedisk.cache_dir() / "artifacts"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = output_root / f"qemu-{plan.os_name}-{stamp}-{digest[:8]}"
        serial = 1
        while out.exists():  # Packer refuses an existing output directory
            serial += 1
            out = output_root / f"qemu-{plan.os_name}-{stamp}-{digest[:8]}-{serial}"
        output_root.mkdir(parents=True, exist_ok=True)
        variables["qemu_output_directory"] = str(out)
    return packer.build(
        plan.images_dir,
        var_files=plan.layered_var_files(),
        variables=variables,
        only=[plan.only],
        force=force,
        on_event=on_event,
    )


def _records(
    plan: BuildPlan, run: PackerRun, current: InputHash, version: str, elapsed: float
) -> list[ImageRecord]:
    now = int(time.time())
    records = []
    for artifact in run.artifacts:
        for region, image, artifact_id in records_from_artifact(
            plan.provider, artifact.id, artifact.files, default_region=plan.resolved_region()
        ):
            records.append(
                ImageRecord(
                    name=plan.provider,
                    region=region,
                    image=image,
                    artifact_id=artifact_id,
                    input_hash=current.digest,
                    packer_version=version,
                    built_at=now,
                    os=plan.os_name,
                    builder_type=BUILDERS[plan.provider],
                    files=artifact.files,
                    inputs=dict(current.inputs),
                    duration_seconds=round(elapsed, 1),
                )
            )
    return records


def _keep_boot_files(source: sourcedisk.SourceDisk | None, output: str | None) -> list[str]:
    """A debootstrap image has no bootloader: keep its kernel and initrd beside the qcow2."""
    if source is None or output is None:
        return []
    kept = []
    for path in (source.kernel, source.initrd):
        target = Path(output) / path.name
        shutil.copy2(path, target)
        kept.append(str(target))
    return kept


def _first_cause(run: PackerRun) -> str:
    """The first Ansible or Packer error line, which names the cause (the last one rarely does)."""
    for event in run.events:
        for line in event.message.splitlines():
            text = line.split(": ", 1)[-1].strip() if ".glidein: " in line else line.strip()
            if text.startswith(("fatal:", "[ERROR]", "ERROR!")):
                return text
    return run.errors[-1].splitlines()[0] if run.errors else ""
