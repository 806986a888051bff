"""Matching job clusters to entries: per-entry idle, effective idle (1/k) and running counts."""

from __future__ import annotations

import random

import classad2
import pytest

from gwms.frontend.clustering import JobRows, build_ad, cluster_jobs
from gwms.frontend.matching import is_true, match_clusters, match_refs

REQ = "TARGET.Memory >= MY.RequestMemory && stringListMember(TARGET.GLIDEIN_Site, MY.DESIRED_Sites)"
COLUMNS = (
    "JobStatus",
    "Requirements",
    "RequestMemory",
    "DESIRED_Sites",
    "Owner",
    "RequestCpus",
    "MATCH_EXP_JOB_GLIDEIN_Entry_Name",
)


def entry(site: str, memory: int, start: str | None = None, **attrs) -> classad2.ClassAd:
    ad = classad2.ClassAd({"GLIDEIN_Site": site, "Memory": memory, **attrs})
    if start is not None:
        ad["GLIDEIN_Start"] = classad2.ExprTree(start)
    return ad


def jobs(*groups: tuple[int, tuple]) -> JobRows:
    """(count, row) pairs -> rows; a row is (status, req, mem, sites, owner, cpus, on)."""
    return JobRows(COLUMNS, [row for count, row in groups for _ in range(count)])


def run(table: JobRows, entries: dict, match_expr: str | None = None, group_start=None):
    refs = match_refs(match_expr, entries, group_start=group_start)
    return match_clusters(cluster_jobs(table, refs), entries, match_expr, group_start=group_start)


ENTRIES = {
    "A": entry("A", 4000),
    "B": entry("B", 8000),
    "C": entry("C", 16000, start='TARGET.Owner =!= "mallory"'),
}


def test_a_job_matching_k_entries_counts_one_kth_to_each_and_fully_to_matching_idle():
    table = jobs(
        (6, (1, REQ, 2000, "A,B,C", "alice", 1, None)),  # A, B, C: 2 each
        (4, (1, REQ, 6000, "A,B,C", "bob", 1, None)),  # B, C (memory): 2 each
        (3, (1, REQ, 2000, "A,B,C", "mallory", 1, None)),  # A, B (C's start): 1.5 each
        (5, (1, REQ, 2000, "C", "alice", 1, None)),  # C only: 5
    )
    result = run(table, ENTRIES).entries
    assert result["A"].matching_idle == 6 + 3
    assert result["B"].matching_idle == 6 + 4 + 3
    assert result["C"].matching_idle == 6 + 4 + 5
    assert result["A"].effective_idle == pytest.approx(2 + 1.5)
    assert result["B"].effective_idle == pytest.approx(2 + 2 + 1.5)
    assert result["C"].effective_idle == pytest.approx(2 + 2 + 5)
    assert [result[e].effective_idle_glideins for e in "ABC"] == [4, 6, 9]
    assert [result[e].unique_idle for e in "ABC"] == [0, 0, 5]


def test_an_entry_start_expression_keeps_its_entry_from_the_jobs_it_rejects():
    table = jobs((3, (1, REQ, 2000, "C", "mallory", 1, None)))
    result = run(table, ENTRIES)
    assert result.entries["C"].matching_idle == 0
    assert result.unmatched_idle == 3


def test_the_group_match_expression_sees_the_job_as_my_and_the_entry_as_target():
    entries = {
        "A": entry("A", 4000, GLIDEIN_Supported_VOs="cms,atlas"),
        "B": entry("B", 4000, GLIDEIN_Supported_VOs="dune"),
    }
    match = "stringListMember(MY.VO, TARGET.GLIDEIN_Supported_VOs)"
    columns = ("JobStatus", "Requirements", "VO")
    table = JobRows(columns, [(1, "true", "cms")] * 2 + [(1, "true", "dune")] * 5)
    result = run(table, entries, match)
    assert result.entries["A"].matching_idle == 2
    assert result.entries["B"].matching_idle == 5


def test_the_group_start_expression_sees_the_entry_as_my_and_the_job_as_target():
    table = jobs(
        (2, (1, REQ, 2000, "A", "alice", 1, None)), (3, (1, REQ, 2000, "A", "eve", 1, None))
    )
    result = run(table, ENTRIES, group_start='TARGET.Owner != "eve" && MY.Memory > 100')
    assert result.entries["A"].matching_idle == 2
    assert result.unmatched_idle == 3


@pytest.mark.parametrize(
    ("requirements", "match_expr"),
    [
        ("TARGET.NoSuchAttribute > 3", None),  # UNDEFINED from the entry side
        ("MY.NoSuchJobAttribute == 1", None),  # UNDEFINED from the job side
        ('TARGET.GLIDEIN_Site + 1 > 0 || "x"', None),  # ERROR
        ("TARGET.Memory > 0", "MY.NoSuchJobAttribute =!= undefined && MY.X"),
        ("TARGET.Memory > 0", "MY.RequestMemory"),  # a number is true, so this matches...
    ],
)
def test_undefined_or_error_is_no_match_and_does_not_crash(requirements, match_expr):
    table = jobs((4, (1, requirements, 2000, "A", "alice", 1, None)))
    result = run(table, {"A": ENTRIES["A"]}, match_expr)
    expected = 4 if match_expr == "MY.RequestMemory" else 0  # ...2000 is non-zero
    assert result.entries["A"].matching_idle == expected
    assert result.unmatched_idle == 4 - expected


def test_a_job_without_requirements_matches_nothing():
    table = jobs((2, (1, None, 2000, "A", "alice", 1, None)))
    result = run(table, ENTRIES)
    assert result.unmatched_idle == 2
    assert all(m.matching_idle == 0 for m in result.entries.values())


def test_an_entry_start_given_as_a_string_attribute_is_parsed_as_an_expression():
    entries = {"A": entry("A", 4000, GLIDEIN_Start="TARGET.RequestMemory < 1000")}
    result = run(jobs((2, (1, REQ, 2000, "A", "alice", 1, None))), entries)
    assert result.entries["A"].matching_idle == 0


def test_multicore_jobs_are_counted_in_glideins_of_the_entrys_size():
    entries = {
        "four": entry("S", 64000, GLIDEIN_CPUS=4),
        "auto": entry("S", 64000, GLIDEIN_CPUS="auto", GLIDEIN_ESTIMATED_CPUS=16),
    }
    # 3 idle 8-core jobs on both entries: 1.5 jobs = 12 cores each.
    result = run(jobs((3, (1, REQ, 2000, "S", "alice", 8, None))), entries).entries
    assert result["four"].effective_idle_glideins == 3  # 12 / 4
    assert result["auto"].effective_idle_glideins == 1  # ceil(12 / 16)


def test_running_jobs_count_where_they_match_and_where_they_run():
    table = jobs(
        (2, (2, REQ, 2000, "A,B", "alice", 1, "A")),
        (1, (2, REQ, 2000, "A,B", "alice", 1, "gone")),
        (1, (1, REQ, 2000, "A,B", "alice", 1, None)),
    )
    result = run(table, ENTRIES).entries
    assert result["A"].matching_running == 3
    assert result["B"].matching_running == 3
    assert result["A"].running_here == 2
    assert result["B"].running_here == 0
    assert result["A"].effective_idle == pytest.approx(0.5)


def test_each_expression_is_evaluated_once_per_distinct_relevant_values_and_live_entry():
    entries = {e: entry(e, 99999) for e in "ABC"}
    match = "stringListMember(TARGET.GLIDEIN_Site, MY.DESIRED_Sites)"
    req = "TARGET.Memory >= MY.RequestMemory"
    table = jobs(
        *(
            (100, (1, req, mem, site, "alice", 1, None))
            for mem in (1000, 2000)
            for site in ("A", "B")
        )
    )
    result = run(table, entries, match)
    # match: 2 distinct DESIRED_Sites x 3 entries = 6; Requirements: each of the 4
    # clusters is left with 1 entry after the match, and no (memory, entry) pair repeats.
    assert result.evaluations == 6 + 4
    assert result.entries["A"].matching_idle == 200
    assert result.entries["C"].matching_idle == 0


def test_counts_equal_naive_per_job_evaluation_on_full_job_ads():
    rng = random.Random(7)
    sites = ["A", "B", "C", "D"]
    entries = {
        f"e{i}": entry(
            sites[i % 4],
            rng.choice([2000, 4000, 8000]),
            start=rng.choice([None, 'TARGET.Owner =!= "u1"', "TARGET.RequestMemory <= 4000"]),
            GLIDEIN_Supported_VOs=rng.choice(["cms", "cms,dune", "dune"]),
        )
        for i in range(6)
    }
    match = "MY.VO =?= undefined || stringListMember(MY.VO, TARGET.GLIDEIN_Supported_VOs)"
    reqs = [REQ, REQ + " && TARGET.Memory > 3000", "TARGET.GLIDEIN_Site =!= MY.Banned"]
    columns = (
        "JobStatus",
        "Requirements",
        "RequestMemory",
        "DESIRED_Sites",
        "Owner",
        "VO",
        "Banned",
    )
    rows = [
        (
            rng.choice([1, 1, 2]),
            rng.choice(reqs),
            rng.choice([1000, 3000, 6000]),
            ",".join(rng.sample(sites, 2)),
            rng.choice(["u1", "u2", "u3"]),
            rng.choice(["cms", "dune", None]),
            rng.choice(["A", None]),
        )
        for _ in range(300)
    ]
    result = run(JobRows(columns, rows), entries, match)

    tree = classad2.ExprTree(match)
    expected_idle = dict.fromkeys(entries, 0)
    expected_prop = dict.fromkeys(entries, 0.0)
    for row in rows:
        ad = build_ad(dict(zip(columns, row, strict=True)))
        hits = [
            name
            for name, e in entries.items()
            if is_true(tree.eval(scope=ad, target=e))
            and is_true(ad.lookup("Requirements").eval(scope=ad, target=e))
            and ("GLIDEIN_Start" not in e or is_true(e.lookup("GLIDEIN_Start").eval(e, ad)))
        ]
        if row[0] == 1:
            for name in hits:
                expected_idle[name] += 1
                expected_prop[name] += 1 / len(hits)
    assert {n: m.matching_idle for n, m in result.entries.items()} == expected_idle
    for name, m in result.entries.items():
        assert m.effective_idle == pytest.approx(expected_prop[name])
    assert sum(expected_idle.values()) > 0
