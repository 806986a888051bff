"""`gwms factory`: run the glidein factory daemon, and check its configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from gwms.config.summary import effective_yaml, plural


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `factory` group and its `check-config` subcommand."""
    parser = subparsers.add_parser(
        "factory",
        help="run the glidein factory and check its configuration",
        description="The glidein factory: provisions glideins on clouds for authorised frontends.",
    )
    actions = parser.add_subparsers(dest="factory_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check-config",
        help="validate a factory configuration file and summarise it",
        description="Validate FILE; print a one-line summary (exit 0) or every problem with its"
        " line and field (exit 2).",
    )
    check.add_argument("file", metavar="FILE", type=Path, help="factory YAML configuration")
    check.add_argument(
        "--show", action="store_true", help="also print the configuration with defaults filled in"
    )
    check.set_defaults(handler=_check_config)
    run = actions.add_parser(
        "run",
        help="run the factory daemon (one cycle with --once)",
        description="Publish entries, serve verified frontend requests by launching glideins,"
        " reap and reconcile, every `cycle` seconds until SIGTERM/SIGINT. Restart-safe: the"
        " journal in state_dir is reconciled with the clouds on start. Also serves the web"
        " service (pilot files, VM logs and status reports, /metrics) on web.listen, and"
        " stops it cleanly on SIGTERM.",
    )
    run.add_argument("--config", required=True, type=Path, metavar="FILE", help="factory YAML")
    run.add_argument("--once", action="store_true", help="run one cycle and exit")
    run.add_argument(
        "--no-web",
        action="store_true",
        help="do not start the web service (pilot files, logs, status, metrics)",
    )
    run.set_defaults(handler=_run)


def _check_config(args: argparse.Namespace) -> int:
    from gwms.config import load_factory_config

    config = load_factory_config(args.file)
    clouds = {entry.cloud for entry in config.entries}
    disabled = sum(not entry.enabled for entry in config.entries)
    summary = (
        f"factory {config.name}: {plural(len(config.entries), 'entry', 'entries')}"
        f" on {plural(len(clouds), 'cloud')}, {plural(len(config.frontends), 'frontend')}"
        " authorised"
    )
    if disabled:
        summary += f" ({disabled} disabled)"
    print(summary)
    if args.show:
        print(effective_yaml(config), end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    from gwms.factory.daemon import run_factory

    return run_factory(args.config, once=args.once, web=not args.no_web)
