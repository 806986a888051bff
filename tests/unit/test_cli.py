"""The `gwms` command: help works without configuration, bad usage exits 2."""

import subprocess
import sys

import pytest

from gwms.cli import main


def test_help_lists_the_command_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "glidein factory" in capsys.readouterr().out


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gwms", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "gwms-cloud" in result.stdout
