"""Factory configuration: the example loads with sane defaults, and every kind of mistake is
reported with the file, the line, the field path and what is expected."""

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from gwms.config import ConfigFileError, FactoryConfig, load_factory_config
from gwms.config.common import parse_duration, parse_size
from gwms.config.factory import Ec2Cloud, LatestImage, LocalCloud, OpenStackCloud
from gwms.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "factory.yaml"
DATA = REPO / "tests" / "data" / "config"

HEAD = """\
name: gf-test
collector: {backend: htcondor, address: "collector.example.org:9618"}
"""


def write(tmp_path: Path, text: str, name: str = "factory.yaml") -> Path:
    path = tmp_path / name
    head = HEAD if text.startswith(HEAD) else ""
    path.write_text(head + textwrap.dedent(text[len(head) :]))
    return path


def error_for(path: Path) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as caught:
        load_factory_config(path)
    return caught.value


def test_example_loads_with_its_clouds_entries_and_frontend() -> None:
    config = load_factory_config(EXAMPLE)
    assert config.name == "gfactory-local"
    assert [cloud.type for cloud in config.clouds] == ["local", "ec2", "openstack"]
    assert [entry.name for entry in config.entries] == [
        "local_vm",
        "ec2_us_east_1",
        "openstack_site",
    ]
    assert config.frontends[0].identity == "vo1-frontend@127.0.0.1"
    ec2_entry = config.entries[1]
    assert ec2_entry.limits.max_launches_per_cycle == 50
    assert ec2_entry.lifetimes.max == 86400
    assert ec2_entry.lifetimes.retire == 20 * 3600
    assert ec2_entry.spot is not None
    assert ec2_entry.spot.max_price == 0.05
    assert ec2_entry.attributes == {"GLIDEIN_Site": "AWS_US_East_1", "GLIDEIN_CPUS": 2}
    assert config.entries[0].lifetimes.retire == 5400
    assert config.web.max_upload_size == 50_000_000


def test_paths_left_out_default_under_the_state_dir() -> None:
    config = load_factory_config(EXAMPLE)
    state = Path("/var/lib/gwms/factory")
    assert config.web.web_dir == state / "web"
    assert config.web.upload_dir == state / "uploads"
    assert config.keys.dir == state / "keys"
    local = config.cloud("local")
    assert isinstance(local, LocalCloud)
    assert local.base_dir == state / "local-instances"
    image = config.entries[0].image
    assert isinstance(image, LatestImage)
    assert image.manifest == state / "images" / "manifest.json"


def test_cloud_rate_limits_default_to_the_published_api_budgets() -> None:
    config = load_factory_config(EXAMPLE)
    ec2 = config.cloud("aws-us-east-1")
    assert isinstance(ec2, Ec2Cloud)
    limits = ec2.rate_limits
    assert (limits.run_instances.capacity, limits.run_instances.refill_per_second) == (5, 2)
    instances = limits.run_instances_instances
    assert (instances.capacity, instances.refill_per_second) == (1000, 2)
    terminate = limits.terminate_instances
    assert (terminate.capacity, terminate.refill_per_second) == (1000, 20)
    assert (limits.describe.capacity, limits.describe.refill_per_second) == (100, 20)
    openstack = config.cloud("openstack-site")
    assert isinstance(openstack, OpenStackCloud)
    assert openstack.rate_limits.api.capacity == 500
    assert openstack.rate_limits.api.refill_per_second * 300 == pytest.approx(500)


def test_relative_paths_are_taken_from_the_config_files_directory(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        name: gf-test
        collector: {backend: embedded, url: "http://127.0.0.1:9618/", token_file: secrets/t}
        state_dir: state
        clouds: [{name: local, type: local}]
        entries: [{name: a, cloud: local, image: img, instance_types: [small]}]
        """,
    )
    config = load_factory_config(path)
    assert config.collector.backend == "embedded"
    assert config.collector.token_file == tmp_path / "secrets" / "t"
    assert config.collector.url == "http://127.0.0.1:9618"
    assert config.state_dir == tmp_path / "state"
    assert config.web.base_url == "http://127.0.0.1:8319"


def test_wrong_type_names_file_line_field_and_expectation() -> None:
    path = DATA / "factory-wrong-type.yaml"
    assert str(error_for(path)) == (
        f'{path}:20: entries[2].limits.max_running: must be an integer >= 0, got "ten"'
    )


def test_missing_required_field_points_at_the_item_and_says_what_to_add() -> None:
    path = DATA / "factory-missing-field.yaml"
    assert str(error_for(path)) == (
        f"{path}:6: entries[0].image: is required but missing;"
        " add it (an image id, or {latest: <provider>})"
    )


def test_unknown_key_suggests_the_near_miss() -> None:
    path = DATA / "factory-unknown-key.yaml"
    assert str(error_for(path)) == (
        f'{path}:10: entries[0].limts: unknown key (did you mean "limits"?)'
    )


def test_unknown_key_without_near_miss_lists_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "clouds: [{name: l, type: local, colour: red}]\nentries: []\n")
    issue = error_for(path).issues[0]
    assert (issue.line, issue.field) == (3, "clouds[0].colour")
    assert issue.message == (
        "unknown key; the keys allowed here are name, type, base_dir, max_instances,"
        " pilot_user, python, rate_limits, retries"
    )


def test_bad_classad_expression_is_caught_at_load_time() -> None:
    path = DATA / "factory-bad-classad.yaml"
    assert str(error_for(path)).startswith(
        f"{path}:10: entries[0].start: is not a valid ClassAd expression:"
        ' "TARGET.RequestMemory <= (2048"; check parentheses'
    )


def test_yaml_syntax_error_gives_the_line() -> None:
    path = DATA / "factory-syntax-error.yaml"
    assert str(error_for(path)).startswith(
        f"{path}:5: YAML syntax error at column 10: mapping values are not allowed here;"
    )


def test_duplicate_key_gives_both_lines() -> None:
    path = DATA / "factory-duplicate-key.yaml"
    assert str(error_for(path)) == (
        f"{path}:13: entries[0].limits.max_running: duplicate key max_running"
        " (first set on line 11); keep only one"
    )


def test_dangling_references_are_reported_with_line_and_suggestion() -> None:
    path = DATA / "factory-dangling-cloud.yaml"
    error = error_for(path)
    assert str(error).splitlines() == [
        f'{path}:11: entries[1].cloud: refers to cloud "aws-us-east1", which is not defined;'
        ' defined: aws-us-east-1 (did you mean "aws-us-east-1"?) (and 1 more problem below)',
        f'  {path}:17: frontends[0].entries[1]: "c" matches no entry; defined: a, b',
    ]


def test_missing_file_says_where_to_start() -> None:
    path = DATA / "no-such-factory.yaml"
    error = error_for(path)
    assert isinstance(error, ConfigError)
    assert str(error) == (
        f"{path}: no such file; check the path, or start from docs/examples/factory.yaml"
    )


def test_empty_file_and_non_mapping_are_rejected(tmp_path: Path) -> None:
    empty = write(tmp_path, "# nothing yet\n", "empty.yaml")
    assert str(error_for(empty)) == (
        f"{empty}: is empty; write the factory settings (see docs/examples/factory.yaml)"
    )
    listing = write(tmp_path, "- name: a\n", "list.yaml")
    assert str(error_for(listing)) == f"{listing}:1: must be a mapping of settings at the top level"


def test_a_frontend_file_given_to_the_factory_is_recognised() -> None:
    path = REPO / "docs" / "examples" / "frontend.yaml"
    assert str(error_for(path)) == (
        f"{path}: looks like a frontend configuration; check it with `gwms frontend check-config`"
    )


def test_several_errors_summary_first_then_one_per_line_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        cycle: often
        clouds:
          - {name: aws, type: ec3, region: us-east-1}
        entries:
          - {name: a, cloud: aws, image: ami-1, instance_types: [], enabled: yes}
        """,
    )
    error = error_for(path)
    lines = str(error).splitlines()
    assert lines[0].endswith("(and 3 more problems below)")
    assert [(issue.line, issue.field) for issue in error.issues] == [
        (3, "cycle"),
        (5, "clouds[0].type"),
        (7, "entries[0].instance_types"),
        (7, "entries[0].enabled"),
    ]
    assert error.issues[1].message == (
        'must be one of ec2, openstack, local, got "ec3" (did you mean "ec2"?)'
    )
    assert error.issues[2].message == "must have at least 1 item, got 0"
    assert error.issues[3].message == 'must be true or false, got "yes"'
    assert lines[1:] == [f"  {issue}" for issue in error.issues[1:]]


def test_retire_after_max_lifetime_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        clouds: [{name: local, type: local}]
        entries:
          - name: a
            cloud: local
            image: img
            instance_types: [small]
            lifetimes: {max: 2h, retire: 3h}
        """,
    )
    assert str(error_for(path)) == (
        f"{path}:9: entries[0].lifetimes.retire: must not be longer than lifetimes.max"
        " (7200 s), got 10800 s"
    )


def test_spot_is_only_for_ec2_and_cloud_options_not_for_local(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        clouds: [{name: local, type: local}]
        entries:
          - name: a
            cloud: local
            image: img
            instance_types: [small]
            spot: {}
            key_name: ops
        """,
    )
    assert [(i.line, i.field, i.message) for i in error_for(path).issues] == [
        (
            9,
            "entries[0].spot",
            "spot instances need an ec2 cloud, but cloud local is local; remove spot",
        ),
        (10, "entries[0].key_name", "does not apply to local cloud local; remove it"),
    ]


def test_from_frontend_cloud_needs_an_entry_accepting_cloud_credentials(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        clouds:
          - name: aws
            type: ec2
            region: us-east-1
            credentials: {type: from_frontend}
        entries:
          - {name: a, cloud: aws, image: ami-1, instance_types: [m5.large], auth_methods: [idtoken]}
        """,
    )
    assert str(error_for(path)) == (
        f"{path}:9: entries[0].auth_methods: must include aws_key_pair or aws_role because cloud"
        " aws takes its credentials from the frontend"
    )


def test_duplicate_names_point_back_at_the_first(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        clouds: [{name: local, type: local}]
        entries:
          - {name: a, cloud: local, image: img, instance_types: [small]}
          - {name: a, cloud: local, image: img, instance_types: [small]}
        """,
    )
    assert str(error_for(path)) == (
        f'{path}:6: entries[1].name: "a" is already used by entries[0].name (line 5);'
        " each entry needs its own name"
    )


def test_listening_on_all_interfaces_needs_a_public_base_url(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        web:
          listen: 0.0.0.0:8319
        clouds: [{name: local, type: local}]
        entries: [{name: a, cloud: local, image: img, instance_types: [small]}]
        """,
    )
    assert str(error_for(path)) == (
        f"{path}:4: web.listen: listens on all interfaces (0.0.0.0:8319), so VMs need"
        " web.base_url; set it to the URL VMs reach this host by"
    )


def test_image_must_be_an_id_or_latest_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        clouds: [{name: local, type: local}]
        entries:
          - {name: a, cloud: local, image: 42, instance_types: [small]}
          - {name: b, cloud: local, image: {latest: local, manifset: m.json}, instance_types: [s]}
        """,
    )
    assert [(i.line, i.field, i.message) for i in error_for(path).issues] == [
        (5, "entries[0].image", "must be an image id or {latest: <provider>}, got 42"),
        (6, "entries[1].image.manifset", 'unknown key (did you mean "manifest"?)'),
    ]


def test_models_built_in_code_check_references_too() -> None:
    with pytest.raises(ValidationError) as caught:
        FactoryConfig.model_validate(
            {
                "name": "gf",
                "collector": {"backend": "htcondor", "address": "c.example.org:9618"},
                "clouds": [{"name": "local", "type": "local"}],
                "entries": [
                    {"name": "a", "cloud": "nowhere", "image": "i", "instance_types": ["s"]}
                ],
            }
        )
    assert 'entries[0].cloud: refers to cloud "nowhere", which is not defined' in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("1d", 86400)],
)
def test_durations_accept_seconds_or_units(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0", "-5m", "1.5s", True, "2x"])
def test_durations_refuse_other_values(text: object) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [(1024, 1024), ("50MB", 50_000_000), ("512KiB", 524288), ("1GiB", 2**30)]
)
def test_sizes_accept_bytes_or_units(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_attributes_pilot_args_and_log_level_explain_what_fits(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        log_level: verbose
        clouds: [{name: local, type: local}]
        entries:
          - name: a
            cloud: local
            image: img
            instance_types: [small]
            attributes: {GLIDEIN_Site: [a], 9bad: 1, GLIDEIN_CPUS: 2}
            pilot_args: [-x, 5, {a: 1}]
        """,
    )
    assert [(i.line, i.field, i.message) for i in error_for(path).issues] == [
        (3, "log_level", 'must be one of DEBUG, INFO, WARNING, ERROR, got "verbose"'),
        (
            10,
            "entries[0].attributes.GLIDEIN_Site",
            "must be text, a number or true/false, got a list",
        ),
        (
            10,
            "entries[0].attributes.9bad",
            "must be a ClassAd attribute name (letters, digits and '_', not starting with a"
            ' digit), got "9bad"',
        ),
        (11, "entries[0].pilot_args[2]", "must be a single value (text or number), got a mapping"),
    ]


def test_numbers_in_pilot_args_are_kept_as_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEAD
        + """\
        clouds: [{name: local, type: local}]
        entries:
          - {name: a, cloud: local, image: img, instance_types: [s], pilot_args: [-port, 9618]}
        """,
    )
    assert load_factory_config(path).entries[0].pilot_args == ["-port", "9618"]
