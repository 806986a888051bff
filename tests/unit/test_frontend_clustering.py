"""Job clustering: jobs equal in every match-relevant attribute are one cluster."""

from __future__ import annotations

import classad2
import htcondor2  # noqa: F401  (the daemon imports it; it changes how classad2 reports MY. refs)
import pytest

from gwms.frontend.clustering import (
    AttributeRefs,
    ExprText,
    JobRows,
    cluster_jobs,
    expression_refs,
    job_projection,
)

REQ = "TARGET.Memory >= MY.RequestMemory && stringListMember(TARGET.GLIDEIN_Site, MY.DESIRED_Sites)"
COLUMNS = ("JobStatus", "Requirements", "RequestMemory", "DESIRED_Sites", "Owner", "ClusterId")


def rows(*jobs: tuple) -> JobRows:
    return JobRows(COLUMNS, list(jobs))


def by_signature(clusters) -> dict[tuple, tuple[int, int]]:
    return {c.signature: (c.idle, c.running) for c in clusters.clusters}


# --- which attributes an expression reads ---------------------------------------------


def test_my_refs_are_job_attributes_and_target_refs_entry_attributes_for_job_expressions():
    refs = expression_refs(REQ, my="job")
    assert refs.job == {"RequestMemory", "DESIRED_Sites"}
    assert refs.entry == {"Memory", "GLIDEIN_Site"}


def test_start_expressions_read_the_job_through_target():
    refs = expression_refs("TARGET.RequestMemory <= MY.Memory", my="entry")
    assert refs == AttributeRefs(job=frozenset({"RequestMemory"}), entry=frozenset({"Memory"}))


def test_unscoped_refs_count_on_both_sides_because_lookup_falls_back_to_target():
    refs = expression_refs("RequestCpus <= Cpus", my="job")
    assert refs.job == {"RequestCpus", "Cpus"}
    assert refs.entry == {"RequestCpus", "Cpus"}


def test_a_name_used_both_scoped_and_unscoped_counts_on_both_sides():
    refs = expression_refs("MY.Disk > 1 && Disk < 10", my="job")
    assert "Disk" in refs.job
    assert "Disk" in refs.entry


def test_nested_references_read_the_outer_attribute():
    refs = expression_refs("TARGET.Nested.inner == 3 && MY.Other.x", my="job")
    assert refs.entry == {"Nested"}
    assert refs.job == {"Other"}


def test_lowercase_scope_prefixes_are_recognised():
    refs = expression_refs("my.a > 1 && target.b > 2", my="job")
    assert refs == AttributeRefs(job=frozenset({"a"}), entry=frozenset({"b"}))


def test_projection_carries_status_requirements_and_each_referenced_attribute_once():
    projection = job_projection(AttributeRefs(job=frozenset({"Owner", "jobstatus"})))
    assert projection[:2] == ("JobStatus", "Requirements")
    assert "Owner" in projection
    assert [p.lower() for p in projection].count("jobstatus") == 1


# --- clustering -----------------------------------------------------------------------


def test_jobs_with_equal_relevant_attributes_form_one_cluster_whatever_else_differs():
    jobs = rows(
        (1, REQ, 2000, "A,B", "alice", 1),
        (1, REQ, 2000, "A,B", "bob", 2),
        (2, REQ, 2000, "A,B", "carol", 3),
    )
    clusters = cluster_jobs(jobs, AttributeRefs())
    assert len(clusters.clusters) == 1
    (cluster,) = clusters.clusters
    assert (cluster.idle, cluster.running) == (2, 1)
    assert cluster.attributes["RequestMemory"] == 2000
    assert "Owner" not in cluster.attributes


@pytest.mark.parametrize(
    ("column", "other_value"),
    [
        ("RequestMemory", 4000),
        ("DESIRED_Sites", "A"),
        ("Requirements", REQ + " && TARGET.Cpus >= 1"),
    ],
)
def test_any_differing_relevant_attribute_splits_the_cluster(column, other_value):
    base = (1, REQ, 2000, "A,B", "alice", 1)
    changed = list(base)
    changed[COLUMNS.index(column)] = other_value
    clusters = cluster_jobs(rows(base, base, tuple(changed)), AttributeRefs())
    assert sorted(c.idle for c in clusters.clusters) == [1, 2]


def test_an_attribute_read_only_by_the_match_expression_splits_clusters():
    jobs = rows((1, REQ, 2000, "A", "alice", 1), (1, REQ, 2000, "A", "bob", 2))
    assert len(cluster_jobs(jobs, AttributeRefs()).clusters) == 1
    assert len(cluster_jobs(jobs, AttributeRefs(job=frozenset({"Owner"}))).clusters) == 2


def test_undefined_and_defined_values_are_different_signatures():
    jobs = rows((1, REQ, None, "A", "x", 1), (1, REQ, 2000, "A", "x", 2))
    assert len(cluster_jobs(jobs, AttributeRefs()).clusters) == 2


def test_jobs_neither_idle_nor_running_are_not_counted():
    jobs = rows(
        (5, REQ, 2000, "A", "x", 1), (4, REQ, 2000, "A", "x", 2), (1, REQ, 2000, "A", "x", 3)
    )
    clusters = cluster_jobs(jobs, AttributeRefs())
    assert (clusters.idle, clusters.running) == (1, 0)
    assert clusters.jobs == 3


def test_running_jobs_are_counted_per_entry_they_run_on():
    columns = ("JobStatus", "Requirements", "MATCH_EXP_JOB_GLIDEIN_Entry_Name")
    jobs = JobRows(columns, [(2, REQ, "ce1"), (2, REQ, "ce1"), (2, REQ, "ce2"), (1, REQ, None)])
    (cluster,) = cluster_jobs(jobs, AttributeRefs()).clusters
    assert cluster.running == 3
    assert cluster.idle == 1
    assert cluster.running_on == {"ce1": 2, "ce2": 1}


def test_idle_jobs_older_than_ten_minutes_count_as_old_idle():
    columns = ("JobStatus", "Requirements", "EnteredCurrentStatus")
    now = 1_800_000_000
    jobs = JobRows(
        columns,
        [(1, REQ, now - 601), (1, REQ, now - 599), (1, REQ, None), (2, REQ, now - 9999)],
    )
    (cluster,) = cluster_jobs(jobs, AttributeRefs(), now=now).clusters
    assert (cluster.idle, cluster.old_idle, cluster.running) == (3, 1, 1)


def test_referenced_attributes_the_query_did_not_return_are_reported_missing():
    jobs = JobRows(("JobStatus", "Requirements"), [(1, REQ)])
    clusters = cluster_jobs(jobs, AttributeRefs(job=frozenset({"Owner"})))
    assert clusters.missing == {"Owner", "RequestMemory", "DESIRED_Sites"}


def test_column_names_match_attribute_references_case_insensitively():
    jobs = JobRows(
        ("jobstatus", "requirements", "requestmemory", "desired_sites"),
        [(1, REQ, 2000, "A"), (1, REQ, 4000, "A")],
    )
    clusters = cluster_jobs(jobs, AttributeRefs())
    assert len(clusters.clusters) == 2
    assert clusters.missing == frozenset()


def test_attributes_read_by_an_expression_valued_attribute_join_the_signature():
    columns = ("JobStatus", "Requirements", "RequestMemory", "MemoryUsage")
    req = "TARGET.Memory >= MY.RequestMemory"
    mem = ExprText("ifThenElse(MemoryUsage > 1000, MemoryUsage, 1000)")
    jobs = JobRows(columns, [(1, req, mem, 500), (1, req, mem, 3000), (1, req, mem, 500)])
    clusters = cluster_jobs(jobs, AttributeRefs())
    assert "MemoryUsage" in clusters.key_attributes
    assert sorted(c.idle for c in clusters.clusters) == [1, 2]


def test_a_rows_table_without_jobstatus_is_refused():
    with pytest.raises(ValueError, match="JobStatus"):
        cluster_jobs(JobRows(("Requirements",), [(REQ,)]), AttributeRefs())


def test_rows_from_classads_keep_expressions_as_text_and_undefined_as_none():
    ad = classad2.ClassAd({"JobStatus": 1, "RequestMemory": 2000, "Sites": ["A", "B"]})
    ad["Requirements"] = classad2.ExprTree(REQ)
    table = JobRows.from_ads(
        [ad, {"JobStatus": 2}], ("JobStatus", "Requirements", "Owner", "Sites")
    )
    assert table.rows[0] == (1, str(classad2.ExprTree(REQ)), None, ("A", "B"))
    assert isinstance(table.rows[0][1], ExprText)
    assert table.rows[1] == (2, None, None, None)


def test_the_representative_ad_evaluates_like_the_jobs_it_stands_for():
    jobs = rows((1, REQ, 2000, "A,B", "alice", 1))
    (cluster,) = cluster_jobs(jobs, AttributeRefs()).clusters
    machine = classad2.ClassAd({"Memory": 4000, "GLIDEIN_Site": "B"})
    assert cluster.ad.lookup("Requirements").eval(scope=cluster.ad, target=machine) is True
    assert "Owner" not in cluster.ad


def test_request_cpus_defaults_to_one_when_missing_or_not_a_number():
    columns = ("JobStatus", "Requirements", "RequestCpus")
    jobs = JobRows(columns, [(1, REQ, 8), (1, REQ, None), (1, REQ, ExprText("x + 1"))])
    cpus = sorted(c.request_cpus for c in cluster_jobs(jobs, AttributeRefs()).clusters)
    assert cpus == [1, 1, 8]
