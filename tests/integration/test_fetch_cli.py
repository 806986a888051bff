"""`gwms-bootstrap fetch` against metadata servers, as a separate process (and on Python 3.6)."""

import glob
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.metadata import Fault, FaultyImds

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
USER_DATA = b"\x1f\x8b\x08\x00glidein\x00\xff" * 10


def python36() -> str | None:
    """A Python 3.6 interpreter (the oldest image Python we support), if this host has one."""
    candidates = [os.environ.get("GWMS_PYTHON36", ""), "/usr/bin/python3.6"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))
    for candidate in filter(None, candidates):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def bootstrap(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    # -S: no site-packages, only the stdlib and contextualization/ (what the image has).
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO / "contextualization")}
    return subprocess.run(
        [python, "-S", "-m", "gwms_context.bootstrap", *args],
        capture_output=True,
        check=False,
        env=env,
        cwd=REPO / "contextualization",
        timeout=60,
    )


@pytest.fixture
def imds() -> Iterator[FaultyImds]:
    with FaultyImds(user_data=USER_DATA) as server:
        yield server


def test_fetch_from_imds_writes_the_user_data_0600(imds: FaultyImds, tmp_path: Path) -> None:
    output = tmp_path / "user-data"

    result = bootstrap(
        "fetch", "--middleware", "ec2", "--metadata-url", imds.url, "-o", str(output)
    )

    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == USER_DATA
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


def test_fetch_exits_3_when_imds_has_no_user_data(tmp_path: Path) -> None:
    with FaultyImds(user_data=None) as server:
        result = bootstrap(
            "fetch", "--middleware", "ec2", "--metadata-url", server.url, "-o", str(tmp_path / "u")
        )

    assert result.returncode == 3
    assert not (tmp_path / "u").exists()


def test_fetch_gives_up_at_the_deadline_with_one_line(imds: FaultyImds, tmp_path: Path) -> None:
    imds.inject(Fault(path="/latest/user-data", delay=5.0, times=-1))
    started = time.monotonic()

    result = bootstrap(
        "fetch", "--middleware", "ec2", "--metadata-url", imds.url,
        "--timeout", "0.3", "--deadline", "1", "-o", str(tmp_path / "u"),
    )  # fmt: skip

    assert result.returncode == 2
    assert time.monotonic() - started < 1 + 1.5  # deadline + interpreter start-up
    (line,) = result.stderr.decode().splitlines()
    assert "failed after" in line
    assert "timed out" in line


def test_the_bootstrap_runs_on_python_3_6(imds: FaultyImds, tmp_path: Path) -> None:
    interpreter = python36()
    if interpreter is None:
        pytest.skip("no Python 3.6 here (set GWMS_PYTHON36 to one)")
    output = tmp_path / "user-data"
    imds.inject(Fault(path="/latest/user-data", status=401, body=b""))  # exercise the refresh

    result = bootstrap(
        "fetch", "--middleware", "ec2", "--metadata-url", imds.url, "-o", str(output),
        python=interpreter,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == USER_DATA
    assert len(imds.requests_to("/latest/api/token", "PUT")) == 2
