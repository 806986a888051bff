"""`gwms frontend`: commands for the VO frontend (check-config now; the daemon joins later)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gwms.config.summary import effective_yaml, plural


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `frontend` group and its `check-config` subcommand."""
    parser = subparsers.add_parser(
        "frontend",
        help="run the VO frontend and check its configuration",
        description="The VO frontend: matches queued jobs to factory entries and requests"
        " glideins with its credentials.",
    )
    actions = parser.add_subparsers(dest="frontend_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check-config",
        help="validate a frontend configuration file and summarise it",
        description="Validate FILE; print a one-line summary (exit 0) or every problem with its"
        " line and field (exit 2).",
    )
    check.add_argument("file", metavar="FILE", type=Path, help="frontend YAML configuration")
    check.add_argument(
        "--show", action="store_true", help="also print the configuration with defaults filled in"
    )
    check.set_defaults(handler=_check_config)


def _check_config(args: argparse.Namespace) -> int:
    from gwms.config import load_frontend_config

    config = load_frontend_config(args.file)
    print(
        f"frontend {config.name}: {plural(len(config.groups), 'group')},"
        f" {plural(len(config.credentials), 'credential')},"
        f" {plural(len(config.collectors), 'factory collector')},"
        f" {plural(len(config.schedds), 'schedd')}"
    )
    if args.show:
        print(effective_yaml(config), end="")
    return 0
