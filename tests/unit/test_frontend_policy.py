"""Request policy: requested idle, max running, removal mode, and the reasons for each curb.

Defaults (glideinWMS's): max_running 10000, fraction 1.15, max_idle_request 100,
reserve 5, entry idle glideins max 100 / curb 5, ramp-up attenuation 3. Expected
numbers are worked out in the comments.
"""

from __future__ import annotations

import pytest

from gwms.frontend.policy import (
    Demand,
    Glideins,
    RemovalHistory,
    RemoveExcess,
    RequestPolicy,
    ScopeLimit,
    compute_group_requests,
    compute_request,
    decide_removal,
    group_scope,
)

G0 = Glideins(0, 0, 0)

# id, demand, glideins, policy overrides, wider scopes, requested idle, max running, reasons
CASES = [
    # 30 / 3 = 10; max running int(30 * 1.15 + 1) = 35
    ("no limit reached", Demand("ce1", 30), G0, {}, (), 10, 35, ()),
    (
        "entry max_running reached",
        Demand("ce1", 30),
        Glideins(50, 0, 50),
        {"max_running": 50},
        (),
        0,
        35,
        ("entry ce1 max_running 50 reached (50 glideins)",),
    ),
    (
        "entry max_idle reached",  # max run: int((30 - 12) * 1.15 + 1) = 21
        Demand("ce1", 30),
        Glideins(12, 12, 0),
        {"max_idle_glideins": 12},
        (),
        0,
        21,
        ("entry ce1 max_idle 12 reached (12 idle)",),
    ),
    (
        "group max_running reached",
        Demand("ce1", 30),
        G0,
        {},
        (ScopeLimit("group main", 100, 0, max_running=100),),
        0,
        35,
        ("group main max_running 100 reached (100 glideins)",),
    ),
    (
        "group max_idle reached",
        Demand("ce1", 30),
        G0,
        {},
        (ScopeLimit("group main", 40, 40, max_idle=40),),
        0,
        35,
        ("group main max_idle 40 reached (40 idle)",),
    ),
    (
        "global max_running reached",
        Demand("ce1", 30),
        G0,
        {},
        (ScopeLimit("group main", 10, 0), ScopeLimit("global", 500, 10, max_running=500)),
        0,
        35,
        ("global max_running 500 reached (500 glideins)",),
    ),
    (
        "group max_running headroom limits the request",  # room 5, 5 / 3 = 1
        Demand("ce1", 30),
        G0,
        {},
        (ScopeLimit("group main", 95, 0, max_running=100),),
        1,
        35,
        ("group main max_running 100 limited the request to 5",),
    ),
    (
        "entry max_idle headroom limits the request",  # effective 27, room 1, floor 1
        Demand("ce1", 30),
        Glideins(3, 3, 0),
        {"max_idle_glideins": 4, "curb_idle_glideins": 50},
        (),
        1,
        32,  # int(27 * 1.15 + 1)
        ("entry ce1 max_idle 4 limited the request to 1",),
    ),
    (
        "max_idle_request caps one request",  # 10 -> 5
        Demand("ce1", 30),
        G0,
        {"max_idle_request": 5},
        (),
        5,
        35,
        ("entry ce1 max_idle_request 5 capped the request",),
    ),
    (
        "entry curb_idle halves",  # effective 35 - 5 = 30, 10, halved 5
        Demand("ce1", 35),
        Glideins(5, 5, 0),
        {},
        (),
        5,
        35,
        ("entry ce1 curb_idle 5 reached (5 idle): halved",),
    ),
    (
        "group curb_running halves",
        Demand("ce1", 30),
        G0,
        {},
        (ScopeLimit("group main", 90, 0, curb_running=90),),
        5,
        35,
        ("group main curb_running 90 reached (90 glideins): halved",),
    ),
    (
        "group curb_idle halves",
        Demand("ce1", 30),
        G0,
        {},
        (ScopeLimit("group main", 50, 20, curb_idle=20),),
        5,
        35,
        ("group main curb_idle 20 reached (20 idle): halved",),
    ),
    (
        "curbs compound",  # 10 / 2 / 2 = 2.5 -> 2
        Demand("ce1", 35),
        Glideins(5, 5, 0),
        {},
        (ScopeLimit("group main", 90, 5, curb_running=90),),
        2,
        35,
        (
            "entry ce1 curb_idle 5 reached (5 idle): halved",
            "group main curb_running 90 reached (90 glideins): halved",
        ),
    ),
    # int(2 / 3) = 0, but some demand always asks for at least one; max run int(3.3)
    ("a tiny demand asks for one", Demand("ce1", 2), G0, {}, (), 1, 3, ()),
    ("old idle jobs add a reserve", Demand("ce1", 30, old_idle=9), G0, {}, (), 13, 35, ()),
    ("the reserve is capped", Demand("ce1", 30, old_idle=60), G0, {}, (), 15, 35, ()),
    (
        "min_running raises the demand",
        Demand("ce1", 0),
        G0,
        {"min_running": 30},
        (),
        10,
        35,
        ("entry ce1 min_running 30 raised the request",),
    ),
    (
        "entry max_running caps max running",
        Demand("ce1", 30),
        G0,
        {"max_running": 20},
        (),
        6,  # room 20, 20 / 3
        20,
        (
            "entry ce1 max_running 20 limited the request to 20",
            "entry ce1 max_running 20 capped max running",
        ),
    ),
    ("no ramp-up attenuation", Demand("ce1", 30), G0, {"ramp_up_attenuation": 1}, (), 30, 35, ()),
    (
        "idle glideins are subtracted from the demand",  # 30 - 12 = 18, 6; int(18 * 1.15 + 1)
        Demand("ce1", 30),
        Glideins(12, 12, 0),
        {"curb_idle_glideins": 50},
        (),
        6,
        21,
        (),
    ),
    (
        "only running jobs keep max running",
        Demand("ce1", 0, running_here=40),
        G0,
        {},
        (),
        0,
        40,
        (),
    ),
]


@pytest.mark.parametrize(
    ("demand", "glideins", "overrides", "scopes", "idle", "max_running", "reasons"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_request(demand, glideins, overrides, scopes, idle, max_running, reasons):
    request = compute_request(demand, glideins, RequestPolicy(**overrides), scopes)
    assert (request.requested_idle, request.max_running, request.reasons) == (
        idle,
        max_running,
        reasons,
    )


def test_an_entry_in_downtime_gets_nothing_and_says_why():
    request = compute_request(Demand("ce1", 30), G0, RequestPolicy(), in_downtime=True)
    assert (request.requested_idle, request.max_running) == (0, 0)
    assert request.reasons == ("entry ce1 in downtime",)


# id, matching idle jobs, glideins, policy overrides, history before, mode, history after
REMOVAL = [
    ("idle jobs: keep", 30, Glideins(10, 2, 8), {}, (5, 3, 0), "NO", (0, 0, 0)),
    ("5 cycles without idle jobs: keep", 0, Glideins(10, 2, 8), {}, (4, 0, 0), "NO", (5, 0, 0)),
    ("6 cycles without idle jobs: WAIT", 0, Glideins(10, 2, 8), {}, (5, 0, 0), "WAIT", (6, 0, 0)),
    ("and 11 all idle: IDLE", 0, Glideins(4, 4, 0), {}, (6, 10, 0), "IDLE", (7, 11, 0)),
    ("and 11 with none: ALL", 0, Glideins(0, 0, 0), {}, (6, 10, 10), "ALL", (7, 11, 11)),
    ("all idle but jobs wait: keep", 5, Glideins(4, 4, 0), {}, (0, 20, 0), "NO", (0, 21, 0)),
    (
        "configured removal after its wait",
        0,
        Glideins(10, 2, 8),
        {"removal": RemoveExcess.IDLE, "removal_wait": 2},
        (2, 0, 0),
        "IDLE",
        (3, 0, 0),
    ),
    (
        "configured removal within its wait",
        0,
        Glideins(10, 2, 8),
        {"removal": RemoveExcess.IDLE, "removal_wait": 2},
        (1, 0, 0),
        "NO",
        (2, 0, 0),
    ),
]


@pytest.mark.parametrize(
    ("idle_jobs", "glideins", "overrides", "before", "mode", "after"),
    [case[1:] for case in REMOVAL],
    ids=[case[0] for case in REMOVAL],
)
def test_remove_excess(idle_jobs, glideins, overrides, before, mode, after):
    demand = Demand("ce1", idle_jobs, matching_idle_jobs=idle_jobs)
    got, history = decide_removal(
        demand, glideins, RequestPolicy(**overrides), RemovalHistory(*before)
    )
    assert got is RemoveExcess[mode]
    assert history == RemovalHistory(*after)


def test_the_request_carries_the_removal_decision_and_the_new_history():
    request = compute_request(
        Demand("ce1", 0), Glideins(10, 2, 8), RequestPolicy(), history=RemovalHistory(5, 0, 0)
    )
    assert request.remove_excess is RemoveExcess.WAIT
    assert request.history == RemovalHistory(6, 0, 0)
    assert request.remove_excess.name == "WAIT"


def test_entries_of_a_group_share_the_group_headroom_in_name_order():
    policy = RequestPolicy(max_idle_glideins=1000, max_idle_request=1000)
    group = ScopeLimit("group main", 0, 0, max_running=60)
    requests = compute_group_requests([Demand("b", 300), Demand("a", 300)], {}, policy, group)
    # a: room 60 -> 60 / 3 = 20; b: room 60 - 20 = 40 -> 13
    assert [(r.entry, r.requested_idle) for r in requests] == [("a", 20), ("b", 13)]
    assert requests[1].reasons == ("group main max_running 60 limited the request to 40",)


def test_group_scope_sums_the_group_glideins_over_its_entries():
    scope = group_scope("main", {"a": Glideins(10, 4, 6), "b": Glideins(5, 1, 4)}, max_idle=7)
    assert scope == ScopeLimit("group main", 15, 5, max_idle=7)


def test_an_attenuation_below_one_is_refused():
    with pytest.raises(ValueError, match="ramp_up_attenuation"):
        RequestPolicy(ramp_up_attenuation=0.5)
