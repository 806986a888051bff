"""`gwms demo`: the whole stack on 127.0.0.1, N jobs through it, a live table and a summary.

Order: configs -> collector -> cloud (moto for ec2) -> factory (with its web service) ->
frontend -> submit jobs -> watch until every job is done -> let the glideins retire ->
stop frontend and factory -> terminate any VM left -> stop the cloud and the collector ->
check that no process or instance survived. SIGINT/SIGTERM at any point goes straight to
the clean stop (exit 130). `--keep` leaves the stack up until SIGINT/SIGTERM instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import classad2

from gwms.demo import clouds
from gwms.demo.configs import (
    ENTRIES,
    IDENTITIES,
    IDLE_SHUTDOWN_SECONDS,
    DemoLayout,
    prepare,
)
from gwms.demo.progress import COMPLETED, REMOVED, Observer, render
from gwms.demo.summary import job_stages, spans, to_text
from gwms.demo.supervisor import ChildFailed, Supervisor, pid_alive, wait_until
from gwms.errors import GwmsError

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
POLL_SECONDS = 0.5


@dataclass
class DemoOptions:
    jobs: int = 20
    cloud: str = "local"
    keep: bool = False
    json: bool = False
    run_dir: Path | None = None
    timeout: float = 600.0
    job_seconds: int = 1


@dataclass
class DemoState:
    """What the run collects for the summary besides the observer's times."""

    problems: list[str] = field(default_factory=list)
    interrupted: bool = False
    started: float = field(default_factory=time.monotonic)


def python_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "gwms", *args]


@contextlib.contextmanager
def interrupt_event() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set the event instead of raising in the middle of a step."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    saved = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def submit_jobs(observer: Observer, count: int, seconds: int) -> list[str]:
    """N short jobs, alternately small (both entries fit) and big (only the large entry)."""
    small, large = sorted(ENTRIES.values())
    ads = []
    for n in range(count):
        memory = small // 2 if n % 2 == 0 else (small + large) // 2
        ad = classad2.ClassAd(
            {"Cmd": "/bin/sleep", "Arguments": str(seconds), "RequestMemory": memory,
             "RequestCpus": 1, "JobUniverse": 5}
        )  # fmt: skip
        ad["Requirements"] = classad2.ExprTree("TARGET.GLIDEIN_MaxMemMBs >= MY.RequestMemory")
        ads.append(ad)
    return observer.schedd.submit(ads)


def run_demo(options: DemoOptions) -> int:
    run_dir = options.run_dir or Path(tempfile.mkdtemp(prefix="gwms-demo-"))
    layout = DemoLayout(run_dir.resolve(), options.cloud)
    max_vms = max(2, min(8, options.jobs))
    prepare(layout, max_vms=max_vms)
    supervisor = Supervisor(layout.logs)
    state = DemoState()
    cloud = clouds.make_cloud(layout, supervisor)
    observer: Observer | None = None
    out = sys.stderr if options.json else sys.stdout
    with interrupt_event() as stop:
        try:
            observer = start_stack(layout, supervisor, cloud, out)
            if not stop.is_set():
                submit_jobs(observer, options.jobs, options.job_seconds)
                watch(
                    observer,
                    supervisor,
                    cloud=cloud,
                    options=options,
                    state=state,
                    stop=stop,
                    out=out,
                )
            if options.keep and not stop.is_set():
                print_keep(layout, supervisor, out)
                while not stop.wait(1.0):
                    pass
            elif not stop.is_set():
                # The glideins retire after IDLE_SHUTDOWN_SECONDS idle and power their VMs off.
                wait_until(lambda: stop.is_set() or cloud.alive() == 0,
                           IDLE_SHUTDOWN_SECONDS + 30)  # fmt: skip
        except (ChildFailed, GwmsError) as exc:
            state.problems.append(str(exc))
        finally:
            state.interrupted = stop.is_set() and not options.keep
            summary = stop_stack(
                layout, supervisor, cloud=cloud, observer=observer, options=options, state=state
            )
    if options.json:
        print(json.dumps(summary, indent=1, sort_keys=True))
    else:
        print(to_text(summary), file=out)
    if state.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def start_stack(
    layout: DemoLayout, supervisor: Supervisor, cloud: clouds.DemoCloud, out: Any
) -> Observer:
    print(f"gwms demo: run directory {layout.run_dir}", file=out, flush=True)
    supervisor.start(
        "collector",
        python_argv("collector", "serve", "--db", str(layout.collector_db),
                    "--listen", f"127.0.0.1:{layout.collector_port}",
                    "--tokens", str(layout.tokens_file)),
        ready_url=f"{layout.collector_url}/healthz",
    )  # fmt: skip
    cloud.start()
    supervisor.start(
        "factory",
        python_argv("factory", "run", "--config", str(layout.factory_config)),
        ready_url=f"{layout.web_url}/healthz",
        timeout=60,
    )
    supervisor.start("frontend", python_argv("frontend", "run", "--config",
                                             str(layout.frontend_config)))  # fmt: skip
    return Observer(layout)


def watch(
    observer: Observer,
    supervisor: Supervisor,
    *,
    cloud: clouds.DemoCloud,
    options: DemoOptions,
    state: DemoState,
    stop: threading.Event,
    out: Any,
) -> None:
    """Poll until every job is done (or removed), the timeout passes, or a child dies."""
    from rich.console import Console
    from rich.live import Live

    console = Console(file=out)
    deadline = time.monotonic() + options.timeout
    live_ok = console.is_terminal and not options.json

    def table() -> Any:
        seen = observer.seen
        return render(seen, cloud=options.cloud, elapsed=time.monotonic() - state.started,
                      vms_alive=cloud.alive())  # fmt: skip

    last_line = 0.0
    with (
        Live(table(), console=console, refresh_per_second=4, transient=False)
        if live_ok
        else (contextlib.nullcontext()) as live
    ):
        while not stop.is_set():
            seen = observer.poll()
            cloud.step()
            if live is not None:
                live.update(table())
            elif time.monotonic() - last_line >= 5:
                last_line = time.monotonic()
                counts = seen.job_counts()
                print(f"[{time.monotonic() - state.started:5.0f} s] jobs {counts}; VMs alive"
                      f" {cloud.alive()}", file=out, flush=True)  # fmt: skip
            jobs = seen.jobs.values()
            if len(seen.jobs) >= options.jobs and all(
                j.status in (COMPLETED, REMOVED) for j in jobs
            ):
                return
            supervisor.check()
            if time.monotonic() > deadline:
                state.problems.append(
                    f"not every job finished within {options.timeout:.0f} s; see the logs in"
                    f" {observer.layout.logs}"
                )
                return
            stop.wait(POLL_SECONDS)


def print_keep(layout: DemoLayout, supervisor: Supervisor, out: Any) -> None:
    lines = [
        "gwms demo: the stack keeps running (--keep); inspect it with:",
        f"  collector   {layout.collector_url}   (gwms jobs list --collector"
        f" {layout.collector_url} --token-file {layout.token_file('user')})",
        f"  factory web {layout.web_url}/metrics  {layout.web_url}/web/manifest.json",
        f"  logs        {layout.logs}",
        f"  pids        {supervisor.pids()}",
        f"stop it with Ctrl-C, or: kill -INT {os.getpid()}",
    ]
    print("\n".join(lines), file=out, flush=True)


def stop_stack(
    layout: DemoLayout,
    supervisor: Supervisor,
    *,
    cloud: clouds.DemoCloud,
    observer: Observer | None,
    options: DemoOptions,
    state: DemoState,
) -> dict[str, Any]:
    """Stop everything, in an order that lets glideins finish, and check nothing survived."""
    if observer is not None:
        with contextlib.suppress(Exception):
            observer.poll()
    by_name = {c.name: c for c in supervisor.children}
    from gwms.demo.supervisor import stop_child

    codes: dict[str, int] = {}
    for name in ("frontend", "factory"):
        if name in by_name:
            codes[name] = stop_child(by_name[name].proc, supervisor.grace)
    vms = cloud.cleanup()
    codes.update(supervisor.stop_all())
    pids = dict(supervisor.pids())
    left = [f"{name} (pid {pid})" for name, pid in pids.items() if pid_alive(pid)]
    left += [f"VM process {pid}" for pid in vms.pids if pid_alive(pid)]
    return build_summary(
        layout, supervisor, observer=observer, options=options, state=state, vms=vms, left=left,
        codes=codes,
    )  # fmt: skip


def build_summary(
    layout: DemoLayout,
    supervisor: Supervisor,
    *,
    observer: Observer | None,
    options: DemoOptions,
    state: DemoState,
    vms: clouds.VmReport,
    left: list[str],
    codes: dict[str, int],
) -> dict[str, Any]:
    seen = observer.seen if observer is not None else None
    counts = seen.job_counts() if seen is not None else {"done": 0, "failed": 0}
    done = counts["done"]
    latencies = spans(job_stages(seen, observer.booted)) if seen and observer else []
    logs = {c.name: str(c.log) for c in supervisor.children}
    logs["vms"] = str(vms.directory)
    problems = list(state.problems)
    if vms.leaked:
        problems.append(f"{vms.leaked} VM(s) survived the stop: {', '.join(vms.leaked_ids)}")
    if left:
        problems.append(f"processes still running after the stop: {', '.join(left)}")
    ok = done == options.jobs and not vms.leaked and not left and not problems
    return {
        "ok": ok,
        "cloud": options.cloud,
        "elapsed_seconds": round(time.monotonic() - state.started, 1),
        "interrupted": state.interrupted,
        "run_dir": str(layout.run_dir),
        "logs": logs,
        "jobs": {
            "submitted": options.jobs,
            "done": done,
            "failed": counts["failed"],
            "not_done": options.jobs - done - counts["failed"],
        },
        "vms": {
            "launched": vms.launched,
            "terminated": vms.terminated,
            "leaked": vms.leaked,
            "leaked_ids": vms.leaked_ids,
            "by_entry": {e: v.vms for e, v in seen.entries.items()} if seen else {},
        },
        "processes": {
            "pids": supervisor.pids(),
            "vm_pids": sorted(vms.pids),
            "exit_codes": codes,
            "left": left,
        },
        "cloud_calls": dict(seen.cloud_calls)
        if seen and seen.cloud_calls
        else ({"launch_batches": len(seen.batches)} if seen else {}),
        "latencies": [span.__dict__ for span in latencies],
        "urls": {"collector": layout.collector_url, "factory_web": layout.web_url},
        "identities": IDENTITIES,
        "problems": problems,
        "warnings": vms.warnings,
    }


__all__ = ["DemoOptions", "run_demo", "submit_jobs"]
