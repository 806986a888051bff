"""`gwms demo`: run the whole stack on this machine and push N jobs through it (gwms.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gwms.demo.configs import CLOUD_TYPES


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run collector, factory, frontend and a cloud on 127.0.0.1 and push jobs through",
        description="Start on 127.0.0.1 an embedded collector and schedd, the factory (with its"
        " web service), the frontend and a cloud, submit N short jobs, show live progress and"
        " end with a summary: jobs done, VMs launched and terminated, latencies. Exit 0 only"
        " when every job completed and nothing was left running. See docs/quickstart.md.",
    )
    parser.add_argument("--jobs", type=_positive, default=20, help="jobs to submit (default 20)")
    parser.add_argument(
        "--cloud",
        choices=CLOUD_TYPES,
        default="local",
        help="local: VMs are local process trees (default); ec2: moto_server as the EC2 API;"
        " openstack: the OpenStack fake of the source tree",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the stack running for inspection (URLs printed) until Ctrl-C",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON (progress to stderr)"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="where configs, state and every component's log go (default: a new temp directory)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up when the jobs are not done after this many seconds (default 600)",
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from gwms.demo.run import DemoOptions
    from gwms.demo.run import run_demo as run

    return run(
        DemoOptions(
            jobs=args.jobs,
            cloud=args.cloud,
            keep=args.keep,
            json=args.json,
            run_dir=args.run_dir,
            timeout=args.timeout,
        )
    )
