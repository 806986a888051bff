"""The pilot files the factory serves run on any VM: POSIX sh, Python 3.6 and its stdlib."""

from __future__ import annotations

import ast
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEB_AREA = REPO / "gwms" / "factory" / "web_area"
SHELL_SCRIPTS = sorted(WEB_AREA.glob("*.sh"))
STARTD = WEB_AREA / "gwms_startd.py"


def python36() -> str | None:
    candidates = [os.environ.get("GWMS_PYTHON36", ""), "/usr/bin/python3.6"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_in_every_posix_shell_we_meet(shell: str, script: Path) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_stand_in_startd_parses_as_python_36_and_imports_only_the_stdlib() -> None:
    tree = ast.parse(STARTD.read_text(), feature_version=(3, 6))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        else:
            continue
        assert all(name.split(".")[0] in sys.stdlib_module_names for name in names), names


def test_the_stand_in_startd_needs_no_python_newer_than_36() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("vermin")), "-t=3.6-", "--no-tips", "--violations",
         str(STARTD)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_vm_side_runs_on_a_real_python_36() -> None:
    python = python36()
    if python is None:
        pytest.skip("no Python 3.6 interpreter on this host (set GWMS_PYTHON36)")
    startd = subprocess.run(
        [python, "-S", str(STARTD), "--help"], capture_output=True, text=True, check=False
    )
    assert startd.returncode == 0, startd.stderr
    assert "--collector" in startd.stdout
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "contextualization")}
    run = subprocess.run(
        [
            python,
            "-S",
            "-c",
            "from gwms_context import service, bootstrap; bootstrap.main(['run', '--help'])",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "--poweroff-command" in run.stdout


def test_glidein_startup_explains_its_options() -> None:
    result = subprocess.run(
        ["/bin/sh", str(WEB_AREA / "glidein_startup.sh"), "-help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "-collector HOST:PORT" in result.stdout


def test_glidein_startup_refuses_a_missing_option_value() -> None:
    result = subprocess.run(
        ["/bin/sh", str(WEB_AREA / "glidein_startup.sh"), "-collector"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "option -collector needs a value" in result.stderr
