"""gwms.classads: strict parsing, the JSON wire form, constraints and two-way matching."""

from __future__ import annotations

import subprocess
import sys

import classad2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gwms import classads
from gwms.classads import ClassAdError
from gwms.errors import GwmsError


@pytest.mark.parametrize(
    "text", ["1 junk", "x)", "1] junk", "a[", "Memory >", "   ", "1) ; b = (2"]
)
def test_parse_expr_rejects_what_classad2_would_silently_truncate(text: str) -> None:
    with pytest.raises(ClassAdError, match="where-it-was"):
        classads.parse_expr(text, "where-it-was")


def test_parse_expr_accepts_comments_and_keeps_the_expression_unevaluated() -> None:
    expr = classads.parse_expr("TARGET.Memory >= 2048 // at least 2 GB")
    assert expr == classad2.ExprTree("TARGET.Memory >= 2048")


def test_classad_errors_are_gwms_errors_the_cli_prints() -> None:
    assert issubclass(ClassAdError, GwmsError)


def test_the_wire_form_keeps_literals_as_json_and_expressions_as_text() -> None:
    ad = classad2.ClassAd(
        '[Name = "e"; Slots = 4; Ratio = 0.5; Up = true; Gone = undefined; '
        'Requirements = TARGET.Memory > 1; Tags = {"a", "b"}; Nested = [x = 1]]'
    )
    wire = classads.ad_to_json(ad)
    assert wire["Name"] == "e"
    assert wire["Slots"] == 4
    assert wire["Ratio"] == 0.5
    assert wire["Up"] is True
    assert wire["Gone"] is None
    assert wire["Requirements"] == {"expr": "TARGET.Memory > 1"}
    assert wire["Tags"] == {"expr": '{ "a","b" }'}
    back = classads.json_to_ad(wire)
    assert back == ad


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
        st.one_of(
            st.booleans(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=30,
            ),
        ),
        max_size=8,
    ).filter(lambda d: len({k.lower() for k in d}) == len(d))
)
def test_literal_ads_survive_the_wire_form_unchanged(data: dict[str, object]) -> None:
    assert classads.ad_to_json(classads.json_to_ad(data)) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bad name": 1}, "attribute name"),
        ({"9lives": 1}, "attribute name"),
        ({"Slots": 1, "slots": 2}, "twice"),
        ({"Big": 2**70}, "64-bit"),
        ({"List": [1, 2]}, "expr"),
        ({"Req": {"expr": "1 +"}}, "ad.Req"),
        ({"Req": {"expr": 5}}, "expr"),
        ({"Text": "a\x00b"}, "NUL"),
    ],
)
def test_json_to_ad_rejects_bad_names_values_and_expressions(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(ClassAdError, match=message):
        classads.json_to_ad(data, "ad")


def test_old_style_text_parses_into_ads_separated_by_blank_lines() -> None:
    text = '# jobs\nCmd = "/bin/a"\nRequestCpus = 1\n\n\nCmd = "/bin/b"\nRequirements = TARGET.X\n'
    first, second = classads.parse_old_ads(text, "jobs.ads")
    assert first["Cmd"] == "/bin/a"
    assert first["RequestCpus"] == 1
    assert second.lookup("Requirements") == classad2.ExprTree("TARGET.X")
    assert classads.parse_old_ads(classads.format_old_ads([first, second])) == [first, second]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('Cmd = "/bin/a"\nno equals sign\n', "jobs.ads:2"),
        ("A = 1\nB = 2 +\n", "jobs.ads:2"),
        ("A = 1\na = 2\n", "jobs.ads:2"),
        ("\n\n1x = 2\n", "jobs.ads:3"),
    ],
)
def test_old_style_errors_name_the_file_and_line(text: str, where: str) -> None:
    with pytest.raises(ClassAdError, match=where):
        classads.parse_old_ads(text, "jobs.ads")


def test_constraints_are_true_only_for_true_or_nonzero_numbers() -> None:
    ad = classads.json_to_ad({"Slots": 4, "Name": "e"})
    assert classads.eval_constraint("Slots > 2", ad)
    assert classads.eval_constraint("Slots", ad)
    assert not classads.eval_constraint("Slots > 5", ad)
    assert not classads.eval_constraint("Missing > 1", ad)  # undefined
    assert not classads.eval_constraint("Name + 1", ad)  # error
    assert classads.eval_constraint(None, ad)


def test_target_references_resolve_against_the_target_ad() -> None:
    job = classads.json_to_ad({"RequestMemory": 1024})
    machine = classads.json_to_ad({"Memory": 2048})
    assert classads.eval_constraint("TARGET.Memory >= MY.RequestMemory", job, machine)
    assert not classads.eval_constraint("TARGET.Memory >= 4096", job, machine)


def _machine(**attrs: object) -> classad2.ClassAd:
    return classads.json_to_ad({"Name": "slot1", "Memory": 2048, **attrs})


def _job(**attrs: object) -> classad2.ClassAd:
    return classads.json_to_ad(
        {
            "RequestMemory": 1024,
            "Requirements": {"expr": "TARGET.Memory >= MY.RequestMemory"},
            **attrs,
        }
    )


def test_a_job_matches_a_machine_only_when_both_sides_agree() -> None:
    start = {"expr": 'TARGET.Owner == "alice"'}
    assert classads.job_matches_machine(_job(Owner="alice"), _machine(START=start))
    assert not classads.job_matches_machine(_job(Owner="bob"), _machine(START=start))
    assert not classads.job_matches_machine(
        _job(Owner="alice", RequestMemory=4096), _machine(START=start)
    )


def test_a_machine_without_start_is_judged_by_its_requirements_and_without_either_refuses() -> None:
    assert classads.job_matches_machine(_job(), _machine(Requirements=True))
    assert not classads.job_matches_machine(_job(), _machine(Requirements=False))
    assert not classads.job_matches_machine(_job(), _machine())


def test_symmetric_match_uses_each_ads_requirements_against_the_other() -> None:
    machine = _machine(Requirements={"expr": "TARGET.RequestMemory <= MY.Memory"})
    assert classads.symmetric_match(_job(), machine)
    assert not classads.symmetric_match(_job(RequestMemory=4096), machine)
    assert not classads.symmetric_match(classads.json_to_ad({"RequestMemory": 1}), machine)


@given(st.text(max_size=40))
def test_quote_and_unquote_are_inverse_and_quoted_text_is_one_literal(text: str) -> None:
    if "\x00" in text:
        return  # ClassAd strings are C strings
    literal = classads.quote(text)
    assert classads.unquote(literal) == text
    assert classads.parse_expr(literal).eval() == text


def test_projection_keeps_only_the_named_attributes_it_finds() -> None:
    ad = classads.json_to_ad({"A": 1, "B": 2})
    projected = classads.project(ad, ["a", "Missing"])
    assert dict(projected) == {"A": 1}
    assert classads.project(ad, None) is ad


def test_copy_ad_is_independent_of_the_original() -> None:
    ad = classads.json_to_ad({"A": 1, "R": {"expr": "A > 0"}})
    copy = classads.copy_ad(ad)
    ad["A"] = 5
    del ad["R"]
    assert copy["A"] == 1
    assert copy.eval("R") is True


def test_htcondor_library_functions_evaluate_in_constraints() -> None:
    # A fresh interpreter: other tests may already have imported htcondor2 in this one.
    probe = """
import classad2
from gwms.classads import eval_constraint
ad = classad2.ClassAd({"DESIRED_Sites": "CERN,FNAL"})
print(eval_constraint('stringListMember("FNAL", DESIRED_Sites)', ad))
print(eval_constraint('stringListMember("DESY", DESIRED_Sites)', ad))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["True", "False"]


@pytest.mark.parametrize("value", ["\ud800", "ok\udfffok"])
def test_lone_surrogates_are_refused_before_they_reach_classad2(value: str) -> None:
    # classad2 kills the process with SIGSEGV on these; JSON from a client can carry them.
    with pytest.raises(ClassAdError, match="valid Unicode"):
        classads.json_to_ad({"Name": value})
    with pytest.raises(ClassAdError, match="valid Unicode"):
        classads.parse_expr(f'"{value}"', "constraint")
