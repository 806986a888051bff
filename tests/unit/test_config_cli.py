"""`gwms factory check-config` and `gwms frontend check-config`: a one-line summary and exit 0
for a valid file, every problem on stderr and exit 2 for a bad one."""

from pathlib import Path

import pytest
import yaml

from gwms.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
DATA = REPO / "tests" / "data" / "config"


def test_factory_check_config_summarises_a_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["factory", "check-config", str(EXAMPLES / "factory.yaml")]) == 0
    assert capsys.readouterr().out == (
        "factory gfactory-local: 3 entries on 3 clouds, 1 frontend authorised\n"
    )


def test_frontend_check_config_summarises_a_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frontend", "check-config", str(EXAMPLES / "frontend.yaml")]) == 0
    assert capsys.readouterr().out == (
        "frontend vo1-frontend: 2 groups, 2 credentials, 1 factory collector, 1 schedd\n"
    )


def test_invalid_file_exits_2_and_prints_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "frontend-cross-references.yaml"
    assert main(["frontend", "check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0].startswith(f"gwms: {path}:8: limits.curb_idle: must not exceed")
    assert len(lines) == 4
    assert lines[3].startswith(f"  {path}:17: credentials[0].groups[1]:")


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert main(["factory", "check-config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"gwms: {path}: no such file; check the path, or start from docs/examples/factory.yaml\n"
    )


def test_show_prints_the_effective_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["factory", "check-config", "--show", str(EXAMPLES / "factory.yaml")]) == 0
    out = capsys.readouterr().out
    summary, _, rest = out.partition("\n")
    assert summary.startswith("factory gfactory-local:")
    effective = yaml.safe_load(rest)
    assert effective["web"]["web_dir"] == "/var/lib/gwms/factory/web"
    assert effective["clouds"][1]["rate_limits"]["describe"] == {
        "capacity": 100,
        "refill_per_second": 20.0,
    }


def test_group_without_action_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["factory"])
    assert exit_info.value.code == 2
