"""What the demo watches while it runs: jobs, requests, glideins, pilots, launches; a live table.

`Observer.poll()` reads the pool (jobs, request, monitoring and Machine ads) as one more
authenticated client of the collector, and the factory's journal read-only, and keeps the
first time each event was seen: those times are what the summary's latencies are made of.
`render()` turns the latest observation into a `rich` table.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from rich import box
from rich.table import Table

from gwms.demo.configs import ENTRIES, FACTORY, FRONTEND, GROUP, DemoLayout
from gwms.pool import PoolError, open_collector, open_schedd

JOB_ATTRS = [
    "ClusterId", "ProcId", "JobStatus", "QDate", "EnteredCurrentStatus", "RemoteHost",
    "CompletionDate", "ExitCode", "RequestMemory",
]  # fmt: skip
IDLE, RUNNING, REMOVED, COMPLETED = 1, 2, 3, 4
VMS_BY_ENTRY = (
    "SELECT b.entry, count(*) FROM glideins g JOIN batches b ON g.batch_id = b.batch_id"
    " GROUP BY b.entry"
)
CALLS = re.compile(r"^gwms_factory_cloud_calls_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.eE+]+)$")


@dataclass
class JobTrack:
    """One job as observed: when it was queued, started, completed, and where it ran."""

    job_id: str
    qdate: int
    status: int = IDLE
    started: int | None = None
    completed: int | None = None
    remote_host: str | None = None
    exit_code: int | None = None

    @property
    def glidein_id(self) -> str | None:
        """`slot1@<glidein id>@<host>` -> the glidein id."""
        if not self.remote_host or self.remote_host.count("@") < 2:
            return None
        return self.remote_host.split("@")[1]


@dataclass
class EntryView:
    """The latest numbers for one entry."""

    requested_idle: int = 0
    requested_max: int = 0
    idle: int = 0
    running: int = 0
    retiring: int = 0
    pilots: int = 0
    batches: int = 0
    vms: int = 0


@dataclass
class Observation:
    """Everything seen so far; times are epoch seconds."""

    jobs: dict[str, JobTrack] = field(default_factory=dict)
    entries: dict[str, EntryView] = field(default_factory=lambda: {e: EntryView() for e in ENTRIES})
    requests: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    pilots: dict[str, int] = field(default_factory=dict)  # glidein id -> registered
    pilot_entry: dict[str, str] = field(default_factory=dict)
    batches: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # id -> entry, t, n
    cloud_calls: dict[str, int] = field(default_factory=dict)  # api -> count
    errors: list[str] = field(default_factory=list)

    def job_counts(self) -> dict[str, int]:
        counts = {"idle": 0, "running": 0, "done": 0, "failed": 0}
        for job in self.jobs.values():
            if job.status == IDLE:
                counts["idle"] += 1
            elif job.status == RUNNING:
                counts["running"] += 1
            elif job.status == COMPLETED and job.exit_code == 0:
                counts["done"] += 1
            else:
                counts["failed"] += 1
        return counts


class Observer:
    """Polls the pool, the journal and the factory's metrics; keeps an `Observation`."""

    def __init__(self, layout: DemoLayout) -> None:
        self.layout = layout
        pool = {"backend": "embedded", "url": layout.collector_url,
                "token_file": str(layout.token_file("user")), "timeout": 10}  # fmt: skip
        self.collector = open_collector(pool)
        self.schedd = open_schedd(pool)
        self.seen = Observation()

    def poll(self) -> Observation:
        now = int(time.time())
        with contextlib.suppress(PoolError, requests.RequestException):
            self._jobs(now)
        with contextlib.suppress(PoolError, requests.RequestException):
            self._ads(now)
        with contextlib.suppress(sqlite3.Error):
            self._journal()
        with contextlib.suppress(requests.RequestException, ValueError):
            self._metrics()
        return self.seen

    def _jobs(self, now: int) -> None:
        for ad in self.schedd.query("true", JOB_ATTRS):
            job_id = f"{ad['ClusterId']}.{ad['ProcId']}"
            track = self.seen.jobs.get(job_id)
            if track is None:
                track = self.seen.jobs[job_id] = JobTrack(job_id, int(ad["QDate"]))
            status = int(ad["JobStatus"])
            track.status = status
            if status == RUNNING and track.started is None:
                track.started = int(ad.get("EnteredCurrentStatus", now))
            if ad.get("RemoteHost") is not None:
                track.remote_host = str(ad["RemoteHost"])
            if status == COMPLETED and track.completed is None:
                track.completed = int(ad.get("CompletionDate", now))
                track.exit_code = int(ad.get("ExitCode", -1))
                if track.started is None:  # ran between two polls
                    track.started = track.completed

    def _ads(self, now: int) -> None:
        seen = self.seen
        for ad in self.collector.query("glideclient", f'ReqFactoryName == "{FACTORY}"'):
            entry = str(ad.get("ReqEntryName"))
            if entry not in seen.entries:
                continue
            view = seen.entries[entry]
            view.requested_idle = int(ad.get("ReqIdleGlideins", 0))
            view.requested_max = int(ad.get("ReqMaxGlideins", 0))
            issued = int(ad.get("ReqIssuedAt", now))
            if view.requested_idle > 0 and issued not in seen.requests[entry]:
                seen.requests[entry].append(issued)
        client = f"{FRONTEND}.{GROUP}"
        for ad in self.collector.query("glidefactoryclient", f'ReqClientName == "{client}"'):
            view = seen.entries.get(str(ad.get("ReqEntryName")))
            if view is not None:
                view.idle = int(ad.get("GlideinMonitorStatusIdle", 0))
                view.running = int(ad.get("GlideinMonitorStatusRunning", 0))
                view.retiring = int(ad.get("GlideinMonitorStatusRetiring", 0))
        pilots: dict[str, int] = defaultdict(int)
        for ad in self.collector.query("Machine", "true"):
            glidein, entry = ad.get("GLIDEIN_ID"), ad.get("GLIDEIN_Entry_Name")
            if glidein is None:
                continue
            glidein = str(glidein)
            pilots[str(entry)] += 1
            if glidein not in seen.pilots:
                seen.pilots[glidein] = int(ad.get("DaemonStartTime", now))
                seen.pilot_entry[glidein] = str(entry)
        for entry, view in seen.entries.items():
            view.pilots = pilots.get(entry, 0)

    def _journal(self) -> None:
        if not self.layout.journal.exists():
            return
        uri = f"file:{self.layout.journal}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1)) as db:
            rows = db.execute("SELECT batch_id, entry, created_at, count FROM batches").fetchall()
            vms = dict(db.execute(VMS_BY_ENTRY).fetchall())
        for batch_id, entry, created, count in rows:
            self.seen.batches[batch_id] = (entry, int(created), int(count))
        for entry, view in self.seen.entries.items():
            view.batches = sum(1 for e, _t, _n in self.seen.batches.values() if e == entry)
            view.vms = int(vms.get(entry, 0))

    def _metrics(self) -> None:
        text = requests.get(f"{self.layout.web_url}/metrics", timeout=2).text
        calls: dict[str, int] = defaultdict(int)
        for line in text.splitlines():
            match = CALLS.match(line)
            if match:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
                calls[labels.get("api", "?")] += int(float(match["value"]))
        if calls:
            self.seen.cloud_calls = dict(calls)

    def booted(self, glidein_id: str) -> int | None:
        """When the VM's bootstrap first reported to the factory (its first status line)."""
        entry = self.seen.pilot_entry.get(glidein_id)
        if entry is None:
            batch = glidein_id.rsplit(".", 1)[0]
            entry = self.seen.batches.get(batch, ("", 0, 0))[0]
        path = self.layout.upload_dir / entry / f"{FRONTEND}.{GROUP}" / glidein_id / "status.jsonl"
        return first_status_time(path)


def first_status_time(path: Path) -> int | None:
    try:
        first = path.read_text().splitlines()[0]
        record: dict[str, Any] = json.loads(first)
    except (OSError, IndexError, ValueError):
        return None
    value = record.get("time", record.get("received_at"))
    return int(value) if value is not None else None


def render(seen: Observation, *, cloud: str, elapsed: float, vms_alive: int) -> Table:
    """The live table: jobs, then one row per entry, then cloud calls."""
    counts = seen.job_counts()
    table = Table(
        title=f"gwms demo ({cloud}) - {elapsed:5.1f} s - jobs: {counts['idle']} idle,"
        f" {counts['running']} running, {counts['done']} done"
        + (f", {counts['failed']} failed" if counts["failed"] else ""),
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("entry", "requested", "launching", "running", "retiring", "pilots", "VMs"):
        table.add_column(column, justify="left" if column == "entry" else "right")
    for name, view in seen.entries.items():
        table.add_row(
            name, str(view.requested_idle), str(view.idle), str(view.running),
            str(view.retiring), str(view.pilots), str(view.vms),
        )  # fmt: skip
    calls = ", ".join(f"{api} {n}" for api, n in sorted(seen.cloud_calls.items()))
    batches = len(seen.batches)
    table.caption = (
        f"cloud calls: {calls or f'{batches} launch calls'}; VM processes alive: {vms_alive}"
    )
    return table


__all__ = ["JobTrack", "Observation", "Observer", "first_status_time", "render"]
