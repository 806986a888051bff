"""Factory decisions, table-driven: what to launch, terminate, adopt and settle, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gwms.factory.decisions import (
    ClientRequest,
    EntryPolicy,
    PendingBatch,
    Policy,
    after_terminate,
    decide,
    diff_listing,
    settle_launching,
)
from gwms.factory.journal import GlideinRecord, GlideinState
from gwms.factory.providers.base import Instance, InstanceState
from gwms.protocol.request import RemoveExcess

NOW = 1_795_000_000
L, R, T, Z = (GlideinState.LAUNCHING, GlideinState.RUNNING, GlideinState.TERMINATING,
              GlideinState.ZOMBIE)  # fmt: skip
ENTRY = EntryPolicy(
    "e1", max_running=10, max_idle=5, max_launches_per_cycle=4, max_lifetime=3600,
    retire_after=3000,
)  # fmt: skip


def g(n: int, state: GlideinState, *, age: int = 300, client: str = "fe.a",
      attempts: int = 0, next_at: int | None = None) -> GlideinRecord:  # fmt: skip
    return GlideinRecord(
        glidein_id=f"b{n}.0", batch_id=f"b{n}", launch_index=0, cloud_id=f"i-{n}", entry="e1",
        client=client, frontend="fe", cloud="c", provider_key="c", state=state,
        launched_at=NOW - age, updated_at=NOW - 10, terminate_attempts=attempts,
        next_terminate_at=next_at,
    )  # fmt: skip


def req(idle: int, max_running: int = 10, mode: RemoveExcess = RemoveExcess.NO,
        age: int = 30, client: str = "fe.a", frontend: str = "fe") -> ClientRequest:  # fmt: skip
    return ClientRequest("e1", client, frontend, idle, max_running, mode, NOW - age)


# (name, requests, glideins, pending, entry, frontend max, launches {client: count}, limits)
LAUNCH_CASES = [
    ("launches what the request lacks", [req(3)], [], [], ENTRY, 100, {"fe.a": 3}, []),
    ("idle VMs already count", [req(3)], [g(1, L)], [], ENTRY, 100, {"fe.a": 2}, []),
    (
        "an unsettled batch counts as idle",
        [req(3)],
        [],
        [PendingBatch("b9", "e1", "fe.a", "fe", 3)],
        ENTRY,
        100,
        {},
        [],
    ),
    (
        "running VMs do not count as idle",
        [req(2)],
        [g(1, R), g(2, R)],
        [],
        ENTRY,
        100,
        {"fe.a": 2},
        [],
    ),
    (
        "cut to the request's max running",
        [req(5, max_running=3)],
        [g(1, R)],
        [],
        ENTRY,
        100,
        {"fe.a": 2},
        ["request_max_running"],
    ),
    (
        "cut to the entry's max idle",
        [req(9)],
        [],
        [],
        EntryPolicy("e1", max_idle=2),
        100,
        {"fe.a": 2},
        ["entry_max_idle"],
    ),
    (
        "cut to launches per cycle",
        [req(5)],
        [],
        [],
        ENTRY,
        100,
        {"fe.a": 4},
        ["entry_max_launches_per_cycle"],
    ),
    (
        "cut to the entry's max running",
        [req(5, max_running=20)],
        [g(i, R) for i in range(9)],
        [],
        ENTRY,
        100,
        {"fe.a": 1},
        ["entry_max_running"],
    ),
    (
        "cut to the frontend's max glideins",
        [req(5)],
        [g(1, R)],
        [],
        ENTRY,
        3,
        {"fe.a": 2},
        ["frontend_max_glideins"],
    ),
    (
        "cut to max per frontend on the entry",
        [req(5)],
        [],
        [],
        EntryPolicy("e1", max_per_frontend=1),
        100,
        {"fe.a": 1},
        ["entry_max_per_frontend"],
    ),
    (
        "a disabled entry launches nothing",
        [req(5)],
        [],
        [],
        EntryPolicy("e1", enabled=False),
        100,
        {},
        ["entry_disabled"],
    ),
    (
        "zombies and terminating VMs are not capacity",
        [req(2, max_running=2)],
        [g(1, Z), g(2, T)],
        [],
        ENTRY,
        100,
        {"fe.a": 2},
        [],
    ),
    (
        "clients share the per-cycle budget in name order",
        [req(3), req(3, client="fe.b")],
        [],
        [],
        ENTRY,
        100,
        {"fe.a": 3, "fe.b": 1},
        [],
    ),
]


@pytest.mark.parametrize(
    ("requests", "glideins", "pending", "entry", "fe_max", "launches", "limits"),
    [case[1:] for case in LAUNCH_CASES],
    ids=[case[0] for case in LAUNCH_CASES],
)
def test_launches_fill_requests_within_every_limit(
    requests, glideins, pending, entry, fe_max, launches, limits
) -> None:
    decision = decide(requests, glideins, pending=pending, entries={"e1": entry},
                      frontend_max={"fe": fe_max}, now=NOW)  # fmt: skip
    assert {p.client: p.count for p in decision.launches} == launches
    assert decision.status[("e1", "fe.a")].limits_applied == limits


# (name, request, glideins, terminated ids with reasons)
TERMINATE_CASES = [
    ("NO keeps excess idle VMs", req(0, mode=RemoveExcess.NO), [g(1, L), g(2, L)], {}),
    (
        "IDLE removes the newest excess idle VMs",
        req(1, mode=RemoveExcess.IDLE),
        [g(1, L, age=500), g(2, L, age=100), g(3, R)],
        {"b2.0": "excess_idle"},
    ),
    ("IDLE never touches running VMs", req(0, 0, mode=RemoveExcess.IDLE), [g(1, R)], {}),
    (
        "WAIT removes only VMs idle long enough",
        req(0, mode=RemoveExcess.WAIT),
        [g(1, L, age=700), g(2, L, age=100)],
        {"b1.0": "excess_idle"},
    ),
    (
        "a fresh ALL removes running VMs over max running",
        req(0, 1, mode=RemoveExcess.ALL),
        [g(1, R, age=900), g(2, R, age=100)],
        {"b2.0": "remove_all"},
    ),
    (
        "a stale ALL does not touch running VMs",
        req(0, 0, mode=RemoveExcess.ALL, age=900),
        [g(1, R)],
        {},
    ),
    (
        "VMs past max lifetime are reaped whatever the request",
        req(5),
        [g(1, R, age=3600)],
        {"b1.0": "max_lifetime"},
    ),
    (
        "a zombie is retried once its backoff is over",
        req(0),
        [g(1, Z, next_at=NOW - 1), g(2, Z, next_at=NOW + 60)],
        {"b1.0": "zombie_retry"},
    ),
    (
        "a VM still terminating after the timeout is asked again",
        req(0),
        [g(1, T, next_at=NOW - 1)],
        {"b1.0": "terminate_retry"},
    ),
]


@pytest.mark.parametrize(
    ("request_", "glideins", "expected"),
    [case[1:] for case in TERMINATE_CASES],
    ids=[case[0] for case in TERMINATE_CASES],
)
def test_terminations_follow_the_request_mode_lifetimes_and_backoff(
    request_, glideins, expected
) -> None:
    decision = decide([request_], glideins, pending=[], entries={"e1": ENTRY},
                      frontend_max={"fe": 100}, now=NOW)  # fmt: skip
    assert {t.glidein_id: t.reason for t in decision.terminations} == expected


def test_running_vms_past_their_retire_time_become_retiring() -> None:
    decision = decide([], [g(1, R, age=3100), g(2, R, age=10)], pending=[],
                      entries={"e1": ENTRY}, frontend_max={}, now=NOW)  # fmt: skip
    assert [(t.glidein_id, t.state) for t in decision.transitions] == [
        ("b1.0", GlideinState.RETIRING)
    ]


def inst(n: int, state: InstanceState, batch: str | None = None) -> Instance:
    return Instance(f"i-{n}", batch or f"b{n}", 0, state, "e1", "fe.a",
                    launched_at=datetime.fromtimestamp(NOW, UTC))  # fmt: skip


# (name, journal, listing, known batches, transitions, adopted, orphans)
LISTING_CASES = [
    (
        "a pending VM that runs now is running",
        [g(1, L)],
        [inst(1, InstanceState.RUNNING)],
        ["b1"],
        {"b1.0": R},
        [],
        [],
    ),
    (
        "a VM missing from the listing is gone",
        [g(1, R)],
        [],
        ["b1"],
        {"b1.0": GlideinState.GONE},
        [],
        [],
    ),
    (
        "a just-launched VM missing from the listing is not gone yet",
        [g(1, L, age=5)],
        [],
        ["b1"],
        {},
        [],
        [],
    ),
    (
        "a terminating VM missing from the listing is gone at once",
        [g(1, T, age=5)],
        [],
        ["b1"],
        {"b1.0": GlideinState.GONE},
        [],
        [],
    ),
    (
        "a VM of a journaled batch without a row is adopted",
        [],
        [inst(2, InstanceState.RUNNING)],
        ["b2"],
        {},
        ["b2.0"],
        [],
    ),
    (
        "a VM of a batch never journaled is an orphan",
        [],
        [inst(3, InstanceState.RUNNING)],
        [],
        {},
        [],
        ["b3.0"],
    ),
]


@pytest.mark.parametrize(
    ("journal", "listing", "known", "transitions", "adopted", "orphans"),
    [case[1:] for case in LISTING_CASES],
    ids=[case[0] for case in LISTING_CASES],
)
def test_listings_reconcile_with_the_journal(
    journal, listing, known, transitions, adopted, orphans
) -> None:
    diff = diff_listing(journal, listing, known, NOW, Policy(listing_grace=120))
    assert {t.glidein_id: t.state for t in diff.transitions} == transitions
    assert [i.glidein_id for i in diff.adopt] == adopted
    assert [i.glidein_id for i in diff.orphans] == orphans


@pytest.mark.parametrize(
    ("found", "absent", "outcome"),
    [([inst(1, InstanceState.PENDING)], False, "launched"), ([], True, "failed"),
     ([], False, "unknown")],
    ids=["found by tag", "provably not launched", "lookup inconclusive"],
)  # fmt: skip
def test_an_unknown_launch_is_settled_only_by_its_tag_lookup(found, absent, outcome) -> None:
    assert settle_launching(found, absent) == outcome


def test_refusals_turn_a_vm_into_a_zombie_with_growing_backoff() -> None:
    policy = Policy(zombie_after=3, backoff_initial=60, backoff_max=3600, terminate_timeout=600)
    assert after_terminate(g(1, R), True, NOW, policy) == (T, 0, NOW + 600)
    assert after_terminate(g(1, R), False, NOW, policy) == (T, 1, NOW + 60)
    assert after_terminate(g(1, T, attempts=1), False, NOW, policy) == (T, 2, NOW + 120)
    assert after_terminate(g(1, T, attempts=2), False, NOW, policy) == (Z, 3, NOW + 240)
    assert after_terminate(g(1, Z, attempts=9), False, NOW, policy) == (Z, 10, NOW + 3600)
