"""The `gwms` command: one argparse tree, each subcommand group registered by its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gwms import __version__
from gwms.errors import GwmsError

# Each module exposes register(subparsers) and sets `handler` on the parsers it adds.
COMMAND_MODULES = (
    "gwms.cli.factory_cmd",
    "gwms.cli.frontend_cmd",
    "gwms.cli.collector_cmd",
    "gwms.cli.jobs_cmd",
    "gwms.cli.userdata_cmd",
    "gwms.cli.proxy_cmd",
    "gwms.cli.key_cmd",
    "gwms.cli.image_cmd",
    "gwms.cli.demo_cmd",
)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gwms",
        description="gwms-cloud: run a glidein factory or VO frontend that provisions "
        "HTCondor pilots on clouds, and the tools around them.",
    )
    parser.add_argument("--version", action="version", version=f"gwms-cloud {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.parse_args([*(argv or sys.argv[1:]), "--help"])
        return EXIT_USAGE
    try:
        return int(handler(args) or 0)
    except GwmsError as exc:
        print(f"gwms: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
