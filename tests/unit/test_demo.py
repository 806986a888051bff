"""The demo's parts without the stack: configs, child processes, latencies, the live table.

The whole run (collector, factory, frontend, VMs) is in tests/e2e/test_demo.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from gwms.cli import build_parser
from gwms.config import load_factory_config, load_frontend_config
from gwms.credentials.proxy import load_proxy
from gwms.demo.configs import ENTRIES, IDENTITIES, DemoLayout, prepare
from gwms.demo.progress import COMPLETED, RUNNING, JobTrack, Observation, first_status_time, render
from gwms.demo.summary import job_stages, spans, to_text
from gwms.demo.supervisor import ChildFailed, Supervisor, pid_alive, stop_child
from gwms.errors import GwmsError
from gwms.pool.embedded.tokens import TokenAuth, read_token_file


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A run directory others can traverse (as root, pilots run as nobody; pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="gwms-demo-unit-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("cloud", ["local", "ec2", "openstack"])
def test_prepare_writes_valid_configs_and_private_secrets(run_dir: Path, cloud: str) -> None:
    layout = DemoLayout(run_dir, cloud)
    prepare(layout, max_vms=6)
    factory = load_factory_config(layout.factory_config)
    frontend = load_frontend_config(layout.frontend_config)
    assert [e.name for e in factory.entries] == list(ENTRIES)
    assert factory.clouds[0].type == cloud
    assert factory.frontends[0].identity == IDENTITIES["frontend"]
    assert frontend.factories[0].identity == IDENTITIES["factory"]
    # The pilot is told where the pool is and where its collector token is.
    args = factory.entries[0].pilot_args
    assert args[args.index("-collector") + 1] == layout.collector_url
    assert Path(args[args.index("-idtoken") + 1]) == layout.token_file("glidein")
    # Each daemon's token authenticates as its own identity at the collector.
    auth = TokenAuth(layout.tokens_file)
    for who, identity in IDENTITIES.items():
        token_file = layout.token_file(who)
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert auth.identify(read_token_file(token_file)) == identity
    assert layout.user_proxy.stat().st_mode & 0o777 == 0o600
    assert load_proxy(layout.user_proxy.read_bytes()).cert is not None
    assert layout.secrets.stat().st_mode & 0o777 == 0o700
    if cloud == "ec2":
        assert layout.aws_credentials.stat().st_mode & 0o777 == 0o600
        assert str(factory.clouds[0].endpoint_url).startswith(layout.cloud_url)


@pytest.mark.skipif(os.geteuid() != 0, reason="pilots change user only when the demo is root")
def test_as_root_a_run_dir_the_pilot_user_cannot_reach_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o700)
    layout = DemoLayout(tmp_path / "run", "local")
    with pytest.raises(GwmsError, match=rf"run directory {tmp_path / 'run'} is below {tmp_path},"):
        prepare(layout, max_vms=2)
    assert not layout.factory_config.exists()


def test_the_cli_takes_the_documented_options() -> None:
    args = build_parser().parse_args(
        ["demo", "--jobs", "10", "--cloud", "ec2", "--keep", "--json", "--run-dir", "/tmp/x"]
    )
    assert (args.jobs, args.cloud, args.keep, args.json, args.run_dir) == (
        10, "ec2", True, True, Path("/tmp/x"),
    )  # fmt: skip
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--jobs", "0"])


def test_supervisor_stops_a_child_and_whatever_it_left_in_its_group(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", grace=1)
    # A child that ignores SIGTERM and leaves a grandchild behind in its process group.
    script = (
        "import signal, subprocess, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen(['sleep', '60'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = supervisor.start("stubborn", [sys.executable, "-c", script])
    deadline = time.monotonic() + 10
    while not child.log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(child.log.read_text().split()[0])
    assert pid_alive(grandchild)
    codes = supervisor.stop_all()
    assert codes["stubborn"] == -signal.SIGKILL
    assert not pid_alive(child.pid)
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)


def test_a_child_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    child = supervisor.start("short", [sys.executable, "-c", "raise SystemExit(3)"])
    child.proc.wait(timeout=10)
    with pytest.raises(ChildFailed, match=r"short exited with status 3; see its log .*short\.log"):
        supervisor.check()


def test_a_child_not_ready_in_time_fails_naming_the_url(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs")
    with pytest.raises(ChildFailed, match=r"did not answer http://127\.0\.0\.1:9/healthz"):
        supervisor.start(
            "mute", [sys.executable, "-c", "import time; time.sleep(30)"],
            ready_url="http://127.0.0.1:9/healthz", timeout=1,
        )  # fmt: skip
    codes = supervisor.stop_all()
    assert codes["mute"] == -signal.SIGTERM


def test_stop_child_returns_the_exit_code_of_a_child_that_already_ended() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(timeout=10)
    assert stop_child(proc, grace=1) == 0
    assert not pid_alive(proc.pid)


def test_pid_alive_is_false_for_a_zombie() -> None:
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.02)
    assert not pid_alive(proc.pid)  # exited, not yet reaped
    proc.wait()
    assert pid_alive(os.getpid())


def observed() -> Observation:
    """Two jobs on two glideins of one batch, with every stage seen."""
    seen = Observation()
    for n, (qdate, started) in enumerate([(100, 110), (100, 130)]):
        job = JobTrack(f"1.{n}", qdate, COMPLETED, started, started + 1,
                       f"slot1@gl-b1.{n}@host", 0)  # fmt: skip
        seen.jobs[job.job_id] = job
    seen.jobs["1.2"] = JobTrack("1.2", 100, RUNNING)
    seen.requests["small"] = [90, 102, 104]
    seen.batches["gl-b1"] = ("small", 103, 2)
    seen.pilots = {"gl-b1.0": 108, "gl-b1.1": 109}
    seen.pilot_entry = {"gl-b1.0": "small", "gl-b1.1": "small"}
    return seen


def test_latencies_follow_each_job_through_its_glidein() -> None:
    seen = observed()
    booted = {"gl-b1.0": 106, "gl-b1.1": 107}
    stages = job_stages(seen, booted.get)
    assert len(stages) == 2  # the running job has no latency yet
    assert stages[0] == {"submitted": 100, "requested": 102, "launch": 103, "booted": 106,
                         "registered": 108, "started": 110}  # fmt: skip
    by_label = {s.label: s for s in spans(stages)}
    assert by_label["submitted -> glidein requested"].median == 2
    assert by_label["pilot registered -> job started"].max == 21
    assert by_label["pilot registered -> job started"].published == 180
    assert by_label["requested -> pilot in the pool"].published == 90
    assert by_label["submitted -> job started"].median == 20
    assert by_label["submitted -> job started"].samples == 2


def test_a_stage_never_seen_leaves_that_latency_empty_not_wrong() -> None:
    seen = observed()
    stages = job_stages(seen, lambda _g: None)
    by_label = {s.label: s for s in spans(stages)}
    assert by_label["launch call -> VM booted"].median is None
    assert by_label["launch call -> VM booted"].samples == 0
    assert by_label["requested -> launch call"].median == 1


def test_first_status_time_reads_the_first_report(tmp_path: Path) -> None:
    path = tmp_path / "status.jsonl"
    assert first_status_time(path) is None
    path.write_text(
        json.dumps({"stage": "fetched", "time": 105, "received_at": 106}) + "\n"
        + json.dumps({"stage": "pilot_started", "time": 107}) + "\n"
    )  # fmt: skip
    assert first_status_time(path) == 105


def test_the_live_table_shows_jobs_entries_and_cloud_calls() -> None:
    seen = observed()
    seen.entries["small"].requested_idle = 3
    seen.cloud_calls = {"RunInstances": 2}
    out = io.StringIO()
    Console(file=out, width=140).print(render(seen, cloud="ec2", elapsed=12.0, vms_alive=2))
    text = out.getvalue()
    assert "0 idle, 1 running, 2 done" in text
    assert "small" in text
    assert "large" in text
    assert "RunInstances 2" in text


def test_the_text_summary_names_the_run_dir_logs_and_problems() -> None:
    summary = {
        "ok": False, "cloud": "local", "elapsed_seconds": 30.0, "run_dir": "/tmp/run",
        "logs": {"factory": "/tmp/run/logs/factory.log"},
        "jobs": {"submitted": 2, "done": 1, "failed": 0, "not_done": 1},
        "vms": {"launched": 1, "terminated": 1, "leaked": 0},
        "processes": {"left": []}, "cloud_calls": {},
        "latencies": [s.__dict__ for s in spans(job_stages(observed(), lambda _g: None))],
        "problems": ["not every job finished"],
    }  # fmt: skip
    text = to_text(summary)
    assert "FAILED" in text
    assert "1/2 done, 1 not done" in text
    assert "/tmp/run/logs/factory.log" in text
    assert "problem: not every job finished" in text
    assert "~90 s" in text
