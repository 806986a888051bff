"""`gwms jobs`: submit, list and remove jobs in the embedded schedd's queue."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from gwms.cli.collector_cmd import add_client_options, pool_config_from_args
from gwms.errors import GwmsError

STATUS_NAMES = {1: "idle", 2: "running", 3: "removed", 4: "completed"}
JOB_ID = re.compile(r"(\d+)(?:\.(\d+))?\Z")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `gwms jobs submit|list|rm`."""
    parser = subparsers.add_parser(
        "jobs",
        help="submit, list and remove jobs in the embedded schedd",
        description="Operate the embedded schedd's job queue (see `gwms collector serve`).",
    )
    sub = parser.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)

    submit = sub.add_parser("submit", help="queue jobs from an ads file or from options")
    submit.add_argument(
        "file", nargs="?", type=Path, help="old-style ads file (Attr = expr lines; - for stdin)"
    )
    submit.add_argument("--count", type=int, help="queue N identical jobs (instead of FILE)")
    submit.add_argument("--requirements", help="the jobs' Requirements expression")
    submit.add_argument(
        "--attr", action="append", default=[], metavar="K=EXPR", help="extra attribute"
    )
    add_client_options(submit)
    submit.set_defaults(handler=_submit)

    listing = sub.add_parser("list", help="list jobs (like condor_q)")
    listing.add_argument("--constraint", default="true", help="ClassAd constraint")
    listing.add_argument("--long", action="store_true", help="print whole ads")
    listing.add_argument("--json", action="store_true", help="print the JSON wire form")
    add_client_options(listing)
    listing.set_defaults(handler=_list)

    remove = sub.add_parser("rm", help="remove jobs (like condor_rm)")
    remove.add_argument("target", nargs="?", help="CLUSTER, CLUSTER.PROC or a ClassAd constraint")
    remove.add_argument("--all", action="store_true", help="remove every idle and running job")
    add_client_options(remove)
    remove.set_defaults(handler=_remove)


def _build_jobs(args: argparse.Namespace) -> list:
    from gwms import classads

    if (args.file is None) == (args.count is None):
        raise GwmsError("pass either an ads FILE or --count N to `gwms jobs submit`.")
    if args.file is not None:
        if args.requirements or args.attr:
            raise GwmsError("--requirements and --attr go with --count, not with an ads FILE.")
        source = "<stdin>" if str(args.file) == "-" else str(args.file)
        try:
            text = sys.stdin.read() if source == "<stdin>" else args.file.read_text()
        except OSError as exc:
            raise GwmsError(f"{args.file}: cannot read the ads file ({exc.strerror}).") from exc
        jobs = classads.parse_old_ads(text, source)
        if not jobs:
            raise GwmsError(f"{source}: holds no ads; write 'Attr = expr' lines.")
        return jobs
    if args.count < 1:
        raise GwmsError("--count must be at least 1.")
    template = classads.json_to_ad({})
    if args.requirements:
        template["Requirements"] = classads.parse_expr(args.requirements, "--requirements")
    for item in args.attr:
        name, sep, expr = item.partition("=")
        if not sep:
            raise GwmsError(f"--attr {item!r} is not K=EXPR (e.g. --attr 'Cmd=\"/bin/true\"').")
        name = classads.check_attr_name(name.strip(), f"--attr {item!r}")
        template[name] = classads.parse_expr(expr, f"--attr {name}")
    return [classads.copy_ad(template) for _ in range(args.count)]


def _submit(args: argparse.Namespace) -> int:
    from gwms.pool import open_schedd

    jobs = _build_jobs(args)
    ids = open_schedd(pool_config_from_args(args)).submit(jobs)
    print("\n".join(ids))
    return 0


def _list(args: argparse.Namespace) -> int:
    from gwms import classads
    from gwms.pool import open_schedd

    jobs = open_schedd(pool_config_from_args(args)).query(args.constraint)
    if args.json:
        print(json.dumps([classads.ad_to_json(job) for job in jobs], indent=2))
    elif args.long:
        print(classads.format_old_ads(jobs), end="")
    else:
        print(f"{'ID':<10} {'OWNER':<16} {'STATUS':<10} {'SUBMITTED':<20} HOST")
        for job in jobs:
            qdate = job.get("QDate")
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(qdate)) if qdate else "-"
            status = STATUS_NAMES.get(job.get("JobStatus"), str(job.get("JobStatus")))
            host = classads.get_str(job, "RemoteHost") or "-"
            owner = classads.get_str(job, "Owner") or "-"
            job_id = f"{job.get('ClusterId')}.{job.get('ProcId')}"
            print(f"{job_id:<10} {owner:<16} {status:<10} {when:<20} {host}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from gwms.pool import open_schedd

    if args.all == (args.target is not None):
        raise GwmsError("pass either a job id / constraint or --all to `gwms jobs rm`.")
    constraint = "true" if args.all else _target_constraint(args.target)
    removed = open_schedd(pool_config_from_args(args)).remove(constraint)
    print(f"removed {removed} job(s)")
    return 0


def _target_constraint(target: str) -> str:
    match = JOB_ID.match(target.strip())
    if not match:
        return target
    cluster, proc = match.groups()
    if proc is None:
        return f"ClusterId == {int(cluster)}"
    return f"ClusterId == {int(cluster)} && ProcId == {int(proc)}"
