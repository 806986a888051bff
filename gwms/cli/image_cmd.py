"""`gwms image`: validate the Packer templates, build an image when its inputs changed, and
show what the manifest holds."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gwms.errors import GwmsError

if TYPE_CHECKING:
    from gwms.images.pipeline import BuildPlan

PROVIDERS = ("ec2", "openstack", "qemu")
DEFAULT_MANIFEST = Path("images/manifest.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `image` group and its `validate`, `build` and `status` commands."""
    group = subparsers.add_parser(
        "image", help="build glidein images with Packer and track them", description=__doc__
    )
    commands = group.add_subparsers(dest="image_command", metavar="COMMAND", required=True)

    validate = commands.add_parser("validate", help="packer validate the template per provider")
    _common(validate)
    validate.add_argument(
        "--provider",
        choices=(*PROVIDERS, "all"),
        default="all",
        help="source to validate (default: all)",
    )
    validate.set_defaults(handler=_validate)

    build = commands.add_parser(
        "build", help="build one provider's image unless its inputs are unchanged"
    )
    _common(build)
    build.add_argument("--provider", choices=PROVIDERS, required=True, help="source to build")
    build.add_argument("--force", action="store_true", help="build even if nothing changed")
    build.add_argument("--manifest", type=Path, help=f"manifest (default {DEFAULT_MANIFEST})")
    build.add_argument(
        "--output-dir", type=Path, help="qemu: where qcow2 directories go (default: the cache)"
    )
    build.add_argument(
        "--quiet", action="store_true", help="print Packer's steps only, not Ansible's output"
    )
    build.set_defaults(handler=_build)

    status = commands.add_parser("status", help="list recorded images and whether each is current")
    status.add_argument("--root", type=Path, default=Path(), help="repository root (default .)")
    status.add_argument("--manifest", type=Path, help=f"manifest (default {DEFAULT_MANIFEST})")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=_status)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path(), help="repository root (default .)")
    parser.add_argument("--os", dest="os_name", default="debian12", help="debian12 (default), el9")
    parser.add_argument(
        "--var-file",
        action="append",
        type=Path,
        default=[],
        help="extra .pkrvars.hcl, after images/os/ and images/providers/ (repeatable)",
    )
    parser.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="a Packer variable"
    )
    parser.add_argument("--region", help="EC2 or OpenStack region (default: from the var files)")
    parser.add_argument(
        "--ansible-vars",
        action="append",
        type=Path,
        default=[],
        help="YAML of extra Ansible variables, e.g. images/ansible/offline.yml (repeatable)",
    )
    parser.add_argument(
        "--qemu-source",
        choices=("debootstrap", "var-files"),
        default="debootstrap",
        help="qemu: make the source disk with debootstrap (default), or take qemu_source"
        " (a cloud image) from the var files and give its ssh_username the build key"
        " through a NoCloud seed (needs xorriso)",
    )
    parser.add_argument("--packer", default="packer", help="packer executable (default: PATH)")


def _plan(args: argparse.Namespace, provider: str) -> BuildPlan:
    from gwms.images.pipeline import BuildPlan

    variables = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise GwmsError(f"--var {item!r} is not NAME=VALUE; write it as --var name=value")
        variables[name] = value
    root = args.root.resolve()
    if not (root / "images" / "variables.pkr.hcl").is_file():
        raise GwmsError(
            f"{root} has no images/variables.pkr.hcl; run from the repository root or pass --root"
        )
    return BuildPlan(
        root=root,
        provider=provider,
        os_name=args.os_name,
        var_files=[p.resolve() for p in args.var_file],
        variables=variables,
        ansible_vars_files=[p.resolve() for p in args.ansible_vars],
        region=args.region,
        qemu_source=args.qemu_source,
        output_root=getattr(args, "output_dir", None),
    )


def _validate(args: argparse.Namespace) -> int:
    from gwms.images.packer import Packer
    from gwms.images.pipeline import validate

    packer = Packer(args.packer)
    failed = 0
    providers = PROVIDERS if args.provider == "all" else (args.provider,)
    for provider in providers:
        run = validate(_plan(args, provider), packer)
        if run.ok:
            print(f"{provider}: valid")
        else:
            failed += 1
            text = "; ".join(" ".join(e.split()) for e in run.errors) or "packer validate failed"
            print(f"{provider}: INVALID: {text}", file=sys.stderr)
    return 1 if failed else 0


def _build(args: argparse.Namespace) -> int:
    from gwms.images.packer import Packer, PackerEvent
    from gwms.images.pipeline import build

    plan = _plan(args, args.provider)
    manifest = _manifest_path(args)
    started = time.monotonic()

    def show(line: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {line}", flush=True)

    def on_event(event: PackerEvent) -> None:
        if event.kind != "ui" or len(event.data) < 2:
            return
        if args.quiet and event.data[0] == "message":
            return
        for line in event.message.strip("\n").splitlines():
            if line.strip():
                show(line)

    outcome = build(
        plan, Packer(args.packer), manifest, force=args.force, on_event=on_event, progress=show
    )
    if not outcome.decision.build:
        print(f"nothing to do: {outcome.decision.reason}")
        return 0
    for record in outcome.records:
        where = f" ({record.region})" if record.region else ""
        print(
            f"built {record.name}{where}: {record.image} in {outcome.seconds:.0f}s;"
            f" recorded in {manifest}"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    from gwms.images.manifest import Manifest
    from gwms.images.pipeline import BuildPlan

    manifest = Manifest.load(_manifest_path(args))
    rows = []
    root = args.root.resolve()
    for key in sorted({b.key for b in manifest.builds}):
        record = manifest.latest(*key)
        assert record is not None
        current = None
        if (root / "images" / "variables.pkr.hcl").is_file():
            plan = BuildPlan(root=root, provider=record.name, os_name=record.os or "debian12")
            current = plan.input_hash().digest == record.input_hash
        rows.append((record, current))
    if args.json:
        document = [{**r.to_json(), "inputs": None, "current": c} for r, c in rows]
        print(json.dumps({"manifest": str(manifest.path), "images": document}, indent=2))
        return 0
    if not rows:
        print(f"no images recorded in {manifest.path}; run `gwms image build --provider ...`")
        return 3
    print(f"{'PROVIDER':<10} {'REGION':<12} {'BUILT (UTC)':<20} {'CURRENT':<8} IMAGE")
    for record, current in rows:
        state = {True: "yes", False: "no", None: "?"}[current]
        print(
            f"{record.name:<10} {record.region or '-':<12} {record.built_at_iso[:19]:<20}"
            f" {state:<8} {record.image}"
        )
    return 0


def _manifest_path(args: argparse.Namespace) -> Path:
    if args.manifest is not None:
        return args.manifest
    return args.root.resolve() / DEFAULT_MANIFEST
