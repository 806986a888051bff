"""A real factory process, killed at any point of a launch or throttled by its cloud, converges.

Kill test (DESIGN.md §5): 50 seeded runs, two at a time in independent lanes (moto and
collector each). Each picks a request (3-5 VMs, at most 2 launched per cycle), a cycle,
and either a fault point (`GWMS_FAULT_POINT`, exit 86 there) or a SIGKILL at a random
delay; then the factory is restarted (3 min later, through libfaketime, past the
reconcile listing grace) until it converges. Throttling test: the faulty proxy answers
RunInstances and DescribeInstances with RequestLimitExceeded and 503s; the factory still
converges within the entry's limits and its request rate stays inside its token buckets.
See docs/testing-factory-faults.md.
"""

from __future__ import annotations

import math
import os
import queue
import random
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gwms.factory.daemon import FAULT_EXIT, FAULT_POINTS
from tests.fakes.faulty_proxy import FaultyProxy, faulty_proxy, form, throttle, unavailable
from tests.fakes.moto_server import (
    MotoServer,
    moto_server,  # noqa: F401 - fixture
    write_key_pair_file,
)
from tests.integration import factory_harness as h
from tests.integration.pool_fixtures import CollectorProcess, make_collector

pytestmark = pytest.mark.integration

CLIENT = f"{h.FRONTEND}.main"
SEEDS = range(50)
PER_CYCLE = 2
RESTART_LATER = 180  # s: the restarted factory runs past the 2 min listing grace
# Fault points for the even seeds: each point equally often, in a seeded random order.
FAULT_ORDER = random.Random(2026).sample(FAULT_POINTS * 7, k=len(FAULT_POINTS) * 7)


@dataclass
class Site:
    """One lane: a moto, a collector, the factory's keys, a delegated proxy, the frontend."""

    moto: MotoServer
    collector: CollectorProcess
    base: Path
    key_file: Path
    keys_dir: Path
    pki: h.Pki
    frontend: Any  # the frontend's collector client
    ec2: Any  # the test's own boto3 client to moto (one: making a client costs ~0.3 s)

    def config(self, workdir: Path, endpoint: str | None = None, **kw: Any) -> Path:
        return h.write_factory_config(
            workdir,
            collector_url=self.collector.url,
            token_file=self.collector.token_files[h.FACTORY_ID],
            endpoint_url=endpoint or self.moto.url,
            key_file=self.key_file,
            keys_dir=self.keys_dir,
            **kw,
        )


def open_site(base: Path, moto: MotoServer) -> Site:
    """A collector and a key ring next to `moto`, with the factory's entry ad published."""
    collector = make_collector(base / "pool")
    collector.start()
    try:
        moto.reset()
        site = Site(
            moto=moto,
            collector=collector,
            base=base,
            key_file=write_key_pair_file(base / "aws-credentials"),
            keys_dir=base / "factory-keys",
            pki=h.make_pki(),
            frontend=h.open_pool(collector.url, collector.token_files[h.FRONTEND_ID]),
            ec2=h.ec2_client(moto.url),
        )
        first = h.run_factory(site.config(base / "first"))  # publishes the entry ad
        assert first.returncode == 0, first.stderr[-3000:]
    except BaseException:
        collector.stop()
        raise
    return site


@pytest.fixture(scope="module")
def sites(
    moto_server: MotoServer,  # noqa: F811 - fixture
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Site]]:
    """Two independent lanes (moto + collector each): the kill test runs two seeds at once."""
    if not h.faketime_available():
        pytest.skip(f"libfaketime not installed ({h.FAKETIME_LIB}); apt-get install libfaketime")
    base = tmp_path_factory.mktemp("factory-faults")
    second_moto = MotoServer(log=base / "moto-lane-2.log")
    opened: list[Site] = []
    try:
        second_moto.start()
        opened.append(open_site(base / "lane-1", moto_server))
        opened.append(open_site(base / "lane-2", second_moto))
        yield opened
    finally:
        for site in opened:
            site.collector.stop()
        second_moto.stop()


@pytest.fixture(scope="module")
def site(sites: list[Site]) -> Site:
    return sites[0]


@dataclass(frozen=True)
class Plan:
    """One seeded run: what is asked, when it breaks, and how."""

    seed: int
    wanted: int
    crash_cycle: int  # 1-based factory cycle that is broken
    kind: str  # "fault" or "kill"
    point: str | None
    kill_after: float | None  # s after the process starts

    @classmethod
    def of(cls, seed: int, cycle_seconds: float) -> Plan:
        rng = random.Random(seed)
        wanted = rng.randint(3, 5)
        crash_cycle = rng.randint(1, math.ceil(wanted / PER_CYCLE))
        if seed % 2 == 0:
            return cls(seed, wanted, crash_cycle, "fault", FAULT_ORDER[seed // 2], None)
        delay = rng.uniform(0.5, 1.1) * cycle_seconds
        return cls(seed, wanted, crash_cycle, "kill", None, round(delay, 3))


def killed_run(config: Path, delay: float) -> h.FactoryRun:
    """Start a factory cycle and SIGKILL it by PID `delay` s later (if it is still running)."""
    started = time.monotonic()
    proc = h.start_factory(config)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:  # still running, as intended
        os.kill(proc.pid, signal.SIGKILL)
    return h.finish(proc, started)


def live_for_client(site: Site) -> int:
    return sum(1 for vm in h.live_vms(site.ec2) if vm.client == CLIENT)


def cycle_seconds(site: Site) -> float:
    """How long one clean `--once` process takes here: kills land inside that span."""
    site.moto.reset()
    run = h.run_factory(site.config(site.base / "timing"))
    assert run.returncode == 0, run.stderr[-3000:]
    return run.seconds


def run_seed(site: Site, plan: Plan) -> int:
    """Break the factory as `plan` says, restart it until it settles; the crash's exit code."""
    site.moto.reset()
    workdir = site.base / f"seed-{plan.seed}"
    config = site.config(workdir, max_running=5, max_idle=5, per_cycle=PER_CYCLE)
    h.publish_request(site.frontend, site.pki, idle=plan.wanted, max_running=plan.wanted)
    for _ in range(plan.crash_cycle - 1):
        run = h.run_factory(config)
        assert run.returncode == 0, f"clean cycle failed:\n{run.stderr[-3000:]}"
    if plan.kind == "fault":
        run = h.run_factory(config, fault=plan.point)
        assert run.returncode == FAULT_EXIT, f"fault point not reached:\n{run.stderr[-3000:]}"
    else:
        assert plan.kill_after is not None
        run = killed_run(config, plan.kill_after)
        assert run.returncode in (0, -signal.SIGKILL), run.stderr[-3000:]
    crash_exit = run.returncode
    trail = [f"crash: exit {crash_exit}, {live_for_client(site)} live"]
    assert live_for_client(site) <= plan.wanted, f"overshoot after the crash: {trail}"
    problems = ["not restarted yet"]
    for _ in range(math.ceil(plan.wanted / PER_CYCLE) + 2):
        run = h.run_factory(config, later=RESTART_LATER)
        assert run.returncode == 0, f"restarted factory failed:\n{run.stderr[-3000:]}"
        live = live_for_client(site)
        trail.append(f"restart: {live} live")
        assert live <= plan.wanted, f"{live} VMs launched for {plan.wanted}: {trail}"
        problems = h.convergence_problems(site.ec2, workdir / "state", plan.wanted, CLIENT)
        if not problems:
            return crash_exit
    raise AssertionError(f"did not converge: {problems}; {trail}")


def chosen_seeds() -> list[int]:
    """SEEDS, or the ones GWMS_KILL_SEEDS names ("17" or "3,17,40") to rerun a failure alone."""
    named = os.environ.get("GWMS_KILL_SEEDS", "").strip()
    return [int(s) for s in named.split(",")] if named else list(SEEDS)


@pytest.mark.slow
def test_a_factory_killed_at_any_point_restarts_into_exactly_the_requested_vms(
    sites: list[Site],
) -> None:
    seconds = cycle_seconds(sites[0])
    plans = [Plan.of(seed, seconds) for seed in chosen_seeds()]
    todo: queue.SimpleQueue[Plan] = queue.SimpleQueue()
    for plan in plans:
        todo.put(plan)
    failures: list[str] = []
    crash_exits: dict[int, int] = {}

    def lane(site: Site) -> None:
        while True:
            try:
                plan = todo.get_nowait()
            except queue.Empty:
                return
            try:
                crash_exits[plan.seed] = run_seed(site, plan)
            except Exception as exc:  # every seed's failure is reported, not only the first
                failures.append(f"{plan}: {exc}")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(sites)) as pool:
        list(pool.map(lane, sites))
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} of {len(plans)} runs failed:\n" + "\n".join(failures)
    kills = [p.seed for p in plans if p.kind == "kill"]
    killed = [seed for seed in kills if crash_exits[seed] == -signal.SIGKILL]
    print(f"{len(plans)} runs in {elapsed:.0f} s; {len(killed)} of {len(kills)} kills landed")
    assert len(killed) * 2 >= len(kills), "most SIGKILLs came after the cycle had ended"


# --- throttling and 5xx ---------------------------------------------------------------------------

BUCKETS = {"run_instances": (1.0, 0.5), "describe": (2.0, 1.0)}
BUCKET_OF = {"RunInstances": "run_instances", "DescribeInstances": "describe"}


def worst_excess(times: Sequence[float], capacity: float, refill: float, slack: float) -> float:
    """Largest (requests in a window) - (capacity + refill x window), over every window.

    `slack` widens each window for the time between taking a token and the request's
    arrival at the proxy (connection, signing), which can differ from one request to the next.
    """
    ordered = sorted(times)
    worst = -capacity
    for i, start in enumerate(ordered):
        for j in range(i, len(ordered)):
            allowed = capacity + refill * (ordered[j] - start + slack)
            worst = max(worst, (j - i + 1) - allowed)
    return worst


@pytest.fixture
def proxy(site: Site) -> Iterator[FaultyProxy]:
    site.moto.reset()
    with faulty_proxy(site.moto.url) as started:
        yield started


@pytest.mark.slow
def test_throttled_and_failing_ec2_calls_converge_within_limits_and_rate_buckets(
    site: Site, proxy: FaultyProxy, tmp_path: Path
) -> None:
    max_running = 4
    config = site.config(
        tmp_path / "factory",
        endpoint=proxy.url,
        max_running=max_running,
        max_idle=2,
        per_cycle=PER_CYCLE,
        rate_limits=BUCKETS,
        retries={"attempts": 6, "initial_backoff": "1s", "max_backoff": "2s"},
    )
    proxy.add(
        throttle("RunInstances", times=2),
        unavailable("RunInstances", times=1),
        throttle("DescribeInstances", times=2),
        unavailable("DescribeInstances", times=2),
    )
    h.publish_request(site.frontend, site.pki, idle=10, max_running=10)
    live_after = []
    for _ in range(4):
        first_seen = len(proxy.seen)
        run = h.run_factory(config)
        assert run.returncode == 0, run.stderr[-3000:]
        live_after.append(live_for_client(site))
        assert live_after[-1] <= max_running, f"entry max_running exceeded: {live_after}"
        this_run = proxy.seen[first_seen:]
        launches = [int(form(s)["MaxCount"]) for s in this_run if s.action == "RunInstances"]
        assert all(n <= PER_CYCLE for n in launches), f"more than {PER_CYCLE} per cycle"
        for action, bucket in BUCKET_OF.items():
            capacity, refill = BUCKETS[bucket]
            times = [s.at for s in this_run if s.action == action]
            excess = worst_excess(times, capacity, refill, slack=0.5)
            assert excess <= 0, f"{action}: {excess:.2f} requests over the {bucket} bucket"
    faulted = [s for s in proxy.seen if s.faulted]
    assert len(faulted) == 7, f"not every injected fault was met: {len(faulted)}"
    assert live_after[-1] == max_running, f"did not converge to the entry limit: {live_after}"
    assert live_after[-2] == max_running, f"still moving on the last cycle: {live_after}"
    problems = h.convergence_problems(site.ec2, tmp_path / "factory" / "state", max_running, CLIENT)
    assert not problems
