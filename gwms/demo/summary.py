"""The demo's end: per-job latencies from the observed times, and the summary (text or JSON).

Each job's path is cut into stages: submitted -> glidein requested (the frontend's first
request for the entry that ran it, issued after the job was queued) -> launch call (the
factory journaled the batch) -> VM booted (its bootstrap's first status report) -> pilot
registered (the startd's Machine ad) -> job started. Published figures for cloud
glideinWMS on EC2 sit beside ours: nodes in the pool about 90 s after the request, then
about 3 minutes of scheduling lag before jobs start.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gwms.demo.progress import COMPLETED, Observation

# (label, from stage, to stage, published figure for cloud glideinWMS on EC2, seconds)
SPANS: tuple[tuple[str, str, str, float | None], ...] = (
    ("submitted -> glidein requested", "submitted", "requested", None),
    ("requested -> launch call", "requested", "launch", None),
    ("launch call -> VM booted", "launch", "booted", None),
    ("VM booted -> pilot registered", "booted", "registered", None),
    ("pilot registered -> job started", "registered", "started", 180.0),
    ("requested -> pilot in the pool", "requested", "registered", 90.0),
    ("submitted -> job started", "submitted", "started", None),
)
PUBLISHED_NOTE = (
    "published for cloud glideinWMS on EC2: nodes in the pool ~90 s after the request,"
    " then ~3 min scheduling lag"
)


@dataclass(frozen=True)
class Span:
    label: str
    median: float | None
    max: float | None
    samples: int
    published: float | None


def job_stages(
    seen: Observation, booted: Callable[[str], int | None]
) -> list[dict[str, int | None]]:
    """One dict of stage -> epoch seconds per completed job (None where not observed)."""
    stages = []
    for job in seen.jobs.values():
        if job.status != COMPLETED or job.glidein_id is None:
            continue
        glidein = job.glidein_id
        batch = glidein.rsplit(".", 1)[0]
        entry, launched, _count = seen.batches.get(batch, (seen.pilot_entry.get(glidein), None, 0))
        requested = next((t for t in sorted(seen.requests.get(entry or "", [])) if t >= job.qdate),
                         None)  # fmt: skip
        stages.append(
            {
                "submitted": job.qdate,
                "requested": requested,
                "launch": launched,
                "booted": booted(glidein),
                "registered": seen.pilots.get(glidein),
                "started": job.started,
            }
        )
    return stages


def spans(stages: Sequence[Mapping[str, int | None]]) -> list[Span]:
    out = []
    for label, start, end, published in SPANS:
        values = [
            float(s[end]) - float(s[start])  # type: ignore[arg-type]
            for s in stages
            if s.get(start) is not None and s.get(end) is not None
        ]
        out.append(
            Span(
                label,
                round(statistics.median(values), 1) if values else None,
                round(max(values), 1) if values else None,
                len(values),
                published,
            )
        )
    return out


def to_text(summary: Mapping[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    jobs, vms = summary["jobs"], summary["vms"]
    verdict = "OK" if summary["ok"] else "FAILED"
    lines = [
        f"gwms demo ({summary['cloud']}): {verdict} in {summary['elapsed_seconds']:.0f} s",
        f"  jobs: {jobs['done']}/{jobs['submitted']} done"
        + (f", {jobs['failed']} failed" if jobs["failed"] else "")
        + (f", {jobs['not_done']} not done" if jobs["not_done"] else ""),
        f"  VMs: {vms['launched']} launched, {vms['terminated']} terminated,"
        f" {vms['leaked']} leaked; processes left running: {len(summary['processes']['left'])}",
        f"  cloud calls: {summary['cloud_calls'] or 'n/a'}",
        "",
        f"  {'latency':36} {'median':>8} {'max':>8} {'jobs':>5}  published (EC2)",
    ]
    for span in summary["latencies"]:
        median = "-" if span["median"] is None else f"{span['median']:.1f} s"
        worst = "-" if span["max"] is None else f"{span['max']:.1f} s"
        published = "" if span["published"] is None else f"~{span['published']:.0f} s"
        samples = span["samples"]
        lines.append(f"  {span['label']:36} {median:>8} {worst:>8} {samples:>5}  {published}")
    lines += ["", f"  ({PUBLISHED_NOTE})", f"  run directory and logs: {summary['run_dir']}"]
    lines += [f"    {name}: {path}" for name, path in sorted(summary["logs"].items())]
    for problem in summary.get("problems", []):
        lines.append(f"  problem: {problem}")
    for warning in summary.get("warnings", []):
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


__all__ = ["PUBLISHED_NOTE", "SPANS", "Span", "job_stages", "spans", "to_text"]
