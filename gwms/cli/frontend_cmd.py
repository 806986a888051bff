"""`gwms frontend`: run the VO frontend daemon and check its configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from gwms.config.summary import effective_yaml, plural


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `frontend` group: `check-config` and `run`."""
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
    run = actions.add_parser(
        "run",
        help="run the frontend: match jobs to entries and request glideins every cycle",
        description="Each cycle: read entry ads, jobs and factory reports; advertise sealed"
        " requests, credentials and monitoring ads. Stops cleanly on SIGTERM/SIGINT after the"
        " cycle in progress. Exit 0; 1 if --once hit pool errors (logged); 2 on a bad"
        " configuration.",
    )
    run.add_argument(
        "--config", metavar="FILE", type=Path, required=True, help="frontend YAML configuration"
    )
    run.add_argument("--once", action="store_true", help="run one cycle, then exit")
    run.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        type=str.upper,
        help="override log_level from the configuration",
    )
    run.set_defaults(handler=_run)


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


def _run(args: argparse.Namespace) -> int:
    from gwms.config import load_frontend_config
    from gwms.frontend.daemon import Frontend
    from gwms.frontend.logging import setup_logging

    config = load_frontend_config(args.config)
    setup_logging(args.log_level or config.log_level)
    pinned = {factory.name: factory.identity for factory in config.factories} or None
    return Frontend(config, factory_identities=pinned, identity=config.identity).run(once=args.once)
