"""The YAML reader behind the configuration files: YAML 1.2 scalars, a line for every key and
item, duplicate keys and syntax errors reported with their line."""

from pathlib import Path

import pytest

from gwms.config.yamlsource import Mark, YamlProblem, read_yaml

SOURCE = Path("test.yaml")


def test_only_true_and_false_are_booleans_and_dates_stay_text() -> None:
    text = "a: no\nb: on\nc: yes\nd: true\ne: 2024-01-01\nf: 0o17\ng: 1:30\nh: ~\ni: 1.5\n"
    data = read_yaml(SOURCE, text).data
    assert data == {
        "a": "no",
        "b": "on",
        "c": "yes",
        "d": True,
        "e": "2024-01-01",
        "f": 15,
        "g": "1:30",
        "h": None,
        "i": 1.5,
    }


def test_every_mapping_key_and_sequence_item_has_its_line() -> None:
    text = "name: x\nentries:\n  - name: a\n    limits:\n      max_running: 3\n  - name: b\n"
    source = read_yaml(SOURCE, text)
    assert source.marks[("name",)] == Mark(1, 1)
    assert source.marks[("entries", 0)] == Mark(3, 5)
    assert source.marks[("entries", 0, "limits", "max_running")].line == 5
    assert source.marks[("entries", 1)].line == 6
    assert source.mark_for(("entries", 1, "limits", "max_idle")) == source.marks[("entries", 1)]


def test_duplicate_key_names_both_lines() -> None:
    with pytest.raises(YamlProblem) as caught:
        read_yaml(SOURCE, "a: 1\nb:\n  c: 1\n  c: 2\n")
    assert caught.value.mark == Mark(4, 3)
    assert caught.value.loc == ("b", "c")
    assert caught.value.message == "duplicate key c (first set on line 3); keep only one"


def test_merge_keys_let_explicit_keys_override_and_keep_anchor_lines() -> None:
    text = (
        "base: &base\n"
        "  image: img-1\n"
        "  cloud: local\n"
        "entries:\n"
        "  - <<: *base\n"
        "    cloud: other\n"
        "    name: a\n"
    )
    source = read_yaml(SOURCE, text)
    assert source.data["entries"][0] == {"image": "img-1", "cloud": "other", "name": "a"}
    assert source.marks[("entries", 0, "image")].line == 2
    assert source.marks[("entries", 0, "cloud")].line == 6


def test_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(YamlProblem) as caught:
        read_yaml(SOURCE, "a:\n  - b: 1\n     c: 2\n")
    assert caught.value.mark is not None
    assert caught.value.mark.line == 3
    assert caught.value.message.startswith("YAML syntax error at column 7: ")


def test_empty_document_has_no_data() -> None:
    assert read_yaml(SOURCE, "# only a comment\n").data is None
