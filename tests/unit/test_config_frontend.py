"""Frontend configuration: the example loads, curbs default from the maxima, and mistakes in
values and cross references are reported with file, line, field path and expectation."""

import textwrap
from pathlib import Path

import pytest

from gwms.config import ConfigFileError, load_frontend_config
from gwms.config.common import EmbeddedCollector

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "frontend.yaml"
DATA = REPO / "tests" / "data" / "config"

HEAD = """\
name: vo1-frontend
collectors: [{backend: htcondor, address: "factory.example.org:9618"}]
schedds: [{backend: htcondor, address: "pool.example.org:9618", name: schedd@submit}]
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "frontend.yaml"
    path.write_text(HEAD + textwrap.dedent(body))
    return path


def error_for(path: Path) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as caught:
        load_frontend_config(path)
    return caught.value


def test_example_loads_with_groups_and_credentials() -> None:
    config = load_frontend_config(EXAMPLE)
    assert config.name == "vo1-frontend"
    assert isinstance(config.collectors[0], EmbeddedCollector)
    assert [group.name for group in config.groups] == ["main", "bigmem"]
    assert config.groups[0].limits.per_entry.max_idle == 40
    assert config.credentials[0].min_lifetime == 7200
    assert [c.id for c in config.credentials_for("bigmem")] == ["pilot-token", "vo-proxy"]
    assert [c.id for c in config.credentials_for("main")] == ["pilot-token"]


def test_curbs_default_to_a_share_of_the_maxima(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        limits: {max_running: 2000, max_idle: 300}
        groups: [{name: main}]
        credentials: [{id: tok, type: idtoken, path: tok}]
        """,
    )
    config = load_frontend_config(path)
    assert (config.limits.curb_running, config.limits.curb_idle) == (1800, 60)
    assert config.credentials[0].path == tmp_path / "tok"
    assert config.groups[0].entries == ["*/*"]
    assert config.groups[0].match == "true"


def test_bad_values_each_get_their_line_field_and_expectation() -> None:
    path = DATA / "frontend-bad-values.yaml"
    error = error_for(path)
    assert [(i.line, i.field, i.message) for i in error.issues] == [
        (
            3,
            "collectors[0].backend",
            'must be one of embedded, htcondor, got "embeded" (did you mean "embedded"?)',
        ),
        (
            5,
            "schedds[0].address",
            'must be "host:port" with a port from 1 to 65535 (e.g. "127.0.0.1:9618"),'
            ' got "pool.example.org"',
        ),
        (
            6,
            "cycle",
            'must be a duration such as 90, "90s", "15m", "2h" or "1h30m", got "soon"',
        ),
        (
            9,
            "groups[0].match",
            'is not a valid ClassAd expression: "MY.RequestMemory <= TARGET.Memory &&";'
            " check parentheses, quotes and operators"
            " (e.g. 'RequestMemory <= 2048 && Arch == \"X86_64\"')",
        ),
        (
            10,
            "groups[0].entries[0]",
            'must be "<factory>/<entry>", globs allowed (e.g. "gfactory-*/ec2_*"),'
            ' got "gfactory-local"',
        ),
        (
            13,
            "credentials[0].type",
            "must be one of x509_proxy, aws_key_pair, aws_role, openstack_app_credential,"
            ' idtoken, got "idtokn" (did you mean "idtoken"?)',
        ),
    ]
    assert str(error).splitlines()[0] == (
        f'{path}:3: collectors[0].backend: must be one of embedded, htcondor, got "embeded"'
        ' (did you mean "embedded"?) (and 5 more problems below)'
    )


def test_cross_references_are_checked_with_lines() -> None:
    path = DATA / "frontend-cross-references.yaml"
    assert str(error_for(path)).splitlines() == [
        f"{path}:8: limits.curb_idle: must not exceed limits.max_idle (100), got 150"
        " (and 3 more problems below)",
        f'  {path}:11: groups[1].name: "main" is already used by groups[0].name (line 10);'
        " each group needs its own name",
        f"  {path}:12: groups[2].name: no credential may be used by group orphan, so it cannot"
        " request glideins; add it to the groups of a credential",
        f'  {path}:17: credentials[0].groups[1]: "mian" matches no group; defined: main, orphan'
        ' (did you mean "main"?)',
    ]


def test_missing_discriminator_lists_the_backends(tmp_path: Path) -> None:
    path = tmp_path / "frontend.yaml"
    path.write_text(
        "name: fe\n"
        "collectors:\n"
        "  - url: http://127.0.0.1:9618\n"
        "schedds: [{backend: htcondor, address: 'p.example.org:9618', name: s}]\n"
        "groups: [{name: main}]\n"
        "credentials: [{id: tok, type: idtoken, path: tok}]\n"
    )
    assert str(error_for(path)) == (
        f"{path}:3: collectors[0].backend: is required but missing; add it"
        " (one of embedded, htcondor)"
    )


def test_missing_top_level_sections_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "frontend.yaml"
    path.write_text("name: fe\ngroups: [{name: main}]\n")
    error = error_for(path)
    assert [(i.line, i.field) for i in error.issues] == [
        (1, "collectors"),
        (1, "schedds"),
        (1, "credentials"),
    ]
    assert error.issues[0].message == (
        "is required but missing; add it (factory-side collectors: entry ads in, requests out)"
    )


def test_trusted_factories_and_our_identity_are_read() -> None:
    config = load_frontend_config(EXAMPLE)
    assert config.identity == "vo1-frontend@127.0.0.1"
    assert [(f.name, f.identity) for f in config.factories] == [
        ("gfactory-local", "gfactory-local@127.0.0.1")
    ]


def test_an_attenuation_below_one_is_a_config_error(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    assert "attenuation: 1.0" in text
    bad = tmp_path / "frontend.yaml"
    bad.write_text(text.replace("attenuation: 1.0", "attenuation: 0.5"))
    with pytest.raises(ConfigFileError, match=r"ramp_up\.attenuation"):
        load_frontend_config(bad)
