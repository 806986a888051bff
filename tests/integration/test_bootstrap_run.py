"""`gwms-bootstrap run` end to end as a local VM: a real IMDS server, a stand-in factory web.

The bootstrap runs as a separate process (as glidein-bootstrap.service would), as root here,
dropping to a real pilot user. The pilot is a small script that records who it ran as and
what it was given, so each test can tell whether (and how) the pilot started.
"""

from __future__ import annotations

import base64
import glob
import gzip
import hashlib
import io
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gwms.localvm.imds import ImdsServer
from gwms_context import userdata
from tests.fakes.factory_web import (
    FactoryWeb,
    expired_cert_pem,
    glidein_document,
    proxy_pem,
)
from tests.fakes.pilot_user import ensure_pilot_user

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# The image's system Python runs the bootstrap, and the pilot user must be able to run it too
# (the virtualenv's interpreter may sit in root's home).
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
PILOT_USER = "gwmstestpilot"
TOKEN = "upload-token-0123456789abcdef"

# The test pilot: records uid, proxy mode/owner, args; `-sleep S` sleeps, `-exit N` exits N.
TEST_PILOT = b"""#!/bin/sh
{
  echo "uid=$(id -u)"
  echo "pid=$$"
  echo "time=$(date +%s.%N)"
  echo "proxy=$X509_USER_PROXY"
  echo "proxy_stat=$(stat -c '%a %u' "$X509_USER_PROXY")"
  echo "args=$*"
} > marker.txt
echo "test pilot says hello"
code=0
while [ $# -gt 0 ]; do
  case $1 in
    -sleep) sleep "$2" ;;
    -exit) code=$2 ;;
  esac
  shift
done
exit $code
"""


def python36() -> str | None:
    """A Python 3.6 interpreter (the oldest image Python we support), if this host has one."""
    candidates = [os.environ.get("GWMS_PYTHON36", ""), "/usr/bin/python3.6"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def pilot_user() -> Iterator[str | None]:
    """A real unprivileged user for the pilot (created when root), None when not root."""
    with ensure_pilot_user(PILOT_USER) as user:
        yield user


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A work dir the pilot user can reach (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="gwms-bootstrap-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def web() -> Iterator[FactoryWeb]:
    with FactoryWeb(token=TOKEN, files={"glidein_startup.sh": TEST_PILOT}) as server:
        yield server


class Run:
    """One bootstrap run and what it left behind."""

    def __init__(self, result: subprocess.CompletedProcess[str], work: Path, marker: Path):
        self.result = result
        self.work = work
        self.poweroff_marker = marker

    @property
    def stderr(self) -> str:
        return self.result.stderr

    @property
    def pilot_marker(self) -> Path:
        return self.work / "pilot" / "marker.txt"

    @property
    def pilot_started(self) -> bool:
        return self.pilot_marker.exists()

    @property
    def powered_off(self) -> bool:
        return self.poweroff_marker.exists()

    def pilot_record(self) -> dict[str, str]:
        lines = self.pilot_marker.read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)


def run_bootstrap(
    raw: bytes | None,
    work: Path,
    tmp_path: Path,
    pilot_user: str | None,
    *extra: str,
    launch_index: int = 2,
    python: str = SYSTEM_PYTHON,
) -> Run:
    marker = tmp_path / "powered-off"
    with ImdsServer(launch_index=launch_index, user_data=raw) as imds:
        argv = [
            python, "-m", "gwms_context.bootstrap", "run", "-v",
            "--middleware", "ec2", "--metadata-url", imds.url, "--deadline", "5",
            "--work-dir", str(work), "--poweroff-command", f"touch {marker}",
            "--web-deadline", "3", "--upload-timeout", "2", "--kill-grace", "1",
        ]  # fmt: skip
        if pilot_user:
            argv += ["--pilot-user", pilot_user]
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "contextualization")}
        result = subprocess.run(
            [*argv, *extra], capture_output=True, text=True, env=env, timeout=90, check=False
        )
    return Run(result, work, marker)


def encode(document: dict) -> bytes:
    return userdata.encode(document)


def assert_stopped_before_the_pilot(run: Run, reason: str) -> None:
    assert run.result.returncode == 2, run.stderr
    assert not run.pilot_started
    assert reason in run.stderr
    assert "not started: " in run.stderr
    assert run.powered_off


def test_happy_path_runs_the_pilot_as_the_pilot_user_ships_logs_and_powers_off(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    document = glidein_document(web, pilot_args=["-collector", "127.0.0.1:9618", "-exit", "0"])

    run = run_bootstrap(encode(document), work_dir, tmp_path, pilot_user)

    assert run.result.returncode == 0, run.stderr
    record = run.pilot_record()
    expected_uid = pwd.getpwnam(pilot_user).pw_uid if pilot_user else os.geteuid()
    assert int(record["uid"]) == expected_uid
    assert record["proxy_stat"] == f"600 {expected_uid}"
    assert Path(record["proxy"]).read_text() == proxy_pem()
    assert f"-id {web.batch}.2 " in record["args"]
    assert record["args"].endswith("-collector 127.0.0.1:9618 -exit 0")
    assert "-entry entry_a" in record["args"]
    assert run.powered_off
    assert web.stages()[:4] == ["fetched", "verified", "files", "pilot_started"]
    assert web.stages()[-2:] == ["pilot_exited", "shutdown"]
    assert {status["launch_index"] for status in web.statuses} == {2}
    assert "pilot started" in web.uploads["2/bootstrap.log.gz"].decode()
    assert web.uploads["2/pilot.out.gz"] == b"test pilot says hello\n"
    assert not web.refused
    assert TOKEN not in run.stderr
    assert TOKEN not in (work_dir / "logs" / "bootstrap.log").read_text()


def test_the_bootstrap_runs_on_the_oldest_image_python(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    python = python36()
    if python is None:
        pytest.skip("no Python 3.6 interpreter on this host (set GWMS_PYTHON36)")
    overlay = _overlay(web, "vo.tar.gz", _tarball(b"#!/bin/sh\necho overlay ok\n"))

    run = run_bootstrap(
        encode(glidein_document(web, overlays=[overlay])), work_dir, tmp_path, pilot_user,
        python=python,
    )  # fmt: skip

    assert run.result.returncode == 0, run.stderr
    assert run.pilot_started
    assert web.uploads["2/overlay-vo.tar.gz.log.gz"] == b"overlay ok\n"
    assert run.powered_off


def test_the_pilot_starts_within_two_seconds_of_the_bootstrap(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    """DESIGN.md §6 target; with -s prints the table recorded in bench/RESULTS.md."""
    runs = int(os.environ.get("GWMS_BENCH_RUNS", "3"))
    raw = encode(glidein_document(web))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "contextualization")}
    to_pilot, bare, fetch = [], [], []
    for _ in range(runs):
        started = time.time()
        run = run_bootstrap(raw, work_dir, tmp_path, pilot_user)
        assert run.pilot_started, run.stderr
        to_pilot.append(float(run.pilot_record()["time"]) - started)
        started = time.time()
        subprocess.run([SYSTEM_PYTHON, "-c", "pass"], check=True)
        bare.append(time.time() - started)
        with ImdsServer(user_data=raw) as imds:
            started = time.time()
            subprocess.run(
                [SYSTEM_PYTHON, "-m", "gwms_context.bootstrap", "fetch", "--middleware", "ec2",
                 "--metadata-url", imds.url, "-o", str(tmp_path / "ud")],
                check=True, env=env,
            )  # fmt: skip
            fetch.append(time.time() - started)

    rows = [("python3 -c pass (baseline)", bare), ("bootstrap fetch only", fetch),
            ("bootstrap run: start -> pilot exec", to_pilot)]  # fmt: skip
    print(f"\n{'measure':38} {'runs':>4} {'median s':>9} {'max s':>7}")
    for label, values in rows:
        median = sorted(values)[len(values) // 2]
        print(f"{label:38} {len(values):4d} {median:9.3f} {max(values):7.3f}")
    assert max(to_pilot) < 2.0


def test_a_file_with_the_wrong_hash_stops_the_glidein(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    document = glidein_document(web, files={"glidein_startup.sh": "0" * 64})

    run = run_bootstrap(encode(document), work_dir, tmp_path, pilot_user)

    assert_stopped_before_the_pilot(run, "but the user data expects " + "0" * 64)
    assert web.stages()[-2:] == ["failed", "shutdown"]
    assert "refusing to run it" in web.uploads["2/bootstrap.log.gz"].decode()


def test_an_expired_proxy_stops_the_glidein(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    document = glidein_document(web, credentials={"x509_proxy": expired_cert_pem()})

    run = run_bootstrap(encode(document), work_dir, tmp_path, pilot_user)

    assert_stopped_before_the_pilot(run, "credentials.x509_proxy expired at")
    assert "failed" in web.stages()
    assert "expired at" in web.uploads["2/bootstrap.log.gz"].decode()
    assert ("GET", "/web/glidein_startup.sh") not in web.requests


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x1f\x8b\x08\x00" + b"\x00garbage" * 20, "user data"),
        (b"\x1f\x8b" + os.urandom(1100 * 1024), "over the 1,048,576-byte maximum"),
        (b"#cloud-config\nruncmd: [reboot]\n", "neither gzip"),
    ],
    ids=["corrupt-gzip", "oversized", "not-ours"],
)
def test_unusable_user_data_stops_the_glidein_and_still_powers_off(
    raw: bytes, reason: str, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    run = run_bootstrap(raw, work_dir, tmp_path, pilot_user)

    assert_stopped_before_the_pilot(run, reason)
    assert "user data" in (work_dir / "logs" / "bootstrap.log").read_text()


def test_no_user_data_at_all_stops_the_glidein(
    work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    run = run_bootstrap(None, work_dir, tmp_path, pilot_user)

    assert_stopped_before_the_pilot(run, "found no user data for this VM")


def test_sigterm_stops_the_pilot_ships_the_logs_and_leaves_power_to_the_system(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    document = glidein_document(web, pilot_args=["-sleep", "60"])
    marker = tmp_path / "powered-off"
    with ImdsServer(user_data=encode(document)) as imds:
        argv = [
            SYSTEM_PYTHON, "-m", "gwms_context.bootstrap", "run", "--middleware", "ec2",
            "--metadata-url", imds.url, "--work-dir", str(work_dir),
            "--poweroff-command", f"touch {marker}", "--kill-grace", "1",
            *(["--pilot-user", pilot_user] if pilot_user else []),
        ]  # fmt: skip
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "contextualization")}
        bootstrap = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        try:
            pilot_marker = work_dir / "pilot" / "marker.txt"
            # The shell creates the file before it writes the lines: wait for the last one,
            # or a loaded machine may send the signal before the pilot wrote its pid.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "args=" not in _read(pilot_marker):
                time.sleep(0.05)
            assert "args=" in _read(pilot_marker)
            os.kill(bootstrap.pid, 15)
            _, stderr = bootstrap.communicate(timeout=30)
        finally:
            if bootstrap.poll() is None:
                bootstrap.kill()
                bootstrap.wait()

    assert bootstrap.returncode == 1
    assert "stopped by signal 15; the pilot was stopped" in stderr
    assert web.stages()[-1] == "terminated"
    assert "0/bootstrap.log.gz" in web.uploads  # launch index 0, the default
    assert not marker.exists()
    pilot_pid = int(pilot_marker.read_text().split("pid=")[1].split()[0])
    assert not Path(f"/proc/{pilot_pid}").exists()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _tarball(script: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("overlay.sh")
        info.size, info.mode = len(script), 0o755
        archive.addfile(info, io.BytesIO(script))
    return buffer.getvalue()


def _overlay(web: FactoryWeb, name: str, body: bytes, privileged: bool = False) -> dict:
    web.files[name] = body
    return {
        "name": name,
        "url": f"{web.web_base}/{name}",
        "sha256": hashlib.sha256(body).hexdigest(),
        "privileged": privileged,
    }


def test_a_failing_overlay_stops_the_glidein_and_its_log_is_shipped(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    overlay = _overlay(web, "vo-setup", b"#!/bin/sh\necho cvmfs repository missing\nexit 3\n")
    document = glidein_document(web, overlays=[overlay])

    run = run_bootstrap(encode(document), work_dir, tmp_path, pilot_user)

    assert_stopped_before_the_pilot(run, "overlay vo-setup failed (exit code 3)")
    assert "last line: cvmfs repository missing" in run.stderr
    assert web.uploads["2/overlay-vo-setup.log.gz"] == b"cvmfs repository missing\n"


def test_an_unreachable_factory_stops_the_glidein_quickly_and_still_powers_off(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    document = glidein_document(web)
    web.stop()  # nothing listens on its port any more
    started = time.monotonic()

    run = run_bootstrap(encode(document), work_dir, tmp_path, pilot_user)

    assert_stopped_before_the_pilot(run, "check that the factory web service is reachable")
    assert "log upload stopped" in run.stderr or "not delivered" in run.stderr
    assert time.monotonic() - started < 30


def test_disable_shutdown_leaves_the_vm_running(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    run = run_bootstrap(
        encode(glidein_document(web, disable_shutdown=True)), work_dir, tmp_path, pilot_user
    )

    assert run.pilot_started, run.stderr
    assert not run.powered_off
    assert "not powering off: the user data sets disable_shutdown" in run.stderr


@pytest.mark.slow
def test_a_pilot_past_its_max_lifetime_is_killed(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    document = glidein_document(
        web,
        pilot_args=["-sleep", "60"],
        lifetimes={"max_seconds": 2, "retire_seconds": 1},
    )
    started = time.monotonic()

    run = run_bootstrap(encode(document), work_dir, tmp_path, pilot_user)

    assert run.result.returncode == 1
    assert run.pilot_started
    assert "killed at its 2 s time limit" in run.stderr
    assert time.monotonic() - started < 20
    assert run.powered_off


def test_overlays_run_as_the_pilot_user_unless_privileged_and_allowed(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    if pilot_user is None:
        pytest.skip("privilege dropping needs root; as non-root everything runs as the caller")
    script = b'#!/bin/sh\nid -u > "$GWMS_OVERLAY_DIR/uid"\n'
    overlays = [
        _overlay(web, "plain", script),
        _overlay(web, "asks-root", script, privileged=True),
        _overlay(web, "packed.tar.gz", _tarball(script)),
    ]
    pilot_uid = pwd.getpwnam(pilot_user).pw_uid

    denied = run_bootstrap(
        encode(glidein_document(web, overlays=overlays)), work_dir, tmp_path, pilot_user
    )
    assert denied.pilot_started, denied.stderr
    uids = {
        "plain": work_dir / "overlays/plain/uid",
        "asks-root": work_dir / "overlays/asks-root/uid",
        "packed.tar.gz": work_dir / "overlays/packed.tar.gz/tree/uid",
    }
    assert {name: int(path.read_text()) for name, path in uids.items()} == dict.fromkeys(
        uids, pilot_uid
    )
    assert "overlay asks-root asks for root but this entry does not allow" in denied.stderr

    allowed = run_bootstrap(
        encode(glidein_document(web, overlays=overlays, allow_privileged_overlays=True)),
        work_dir,
        tmp_path,
        pilot_user,
    )
    assert allowed.pilot_started, allowed.stderr
    assert int(uids["asks-root"].read_text()) == 0
    assert int(uids["plain"].read_text()) == pilot_uid


def _legacy_user_data(web: FactoryWeb) -> bytes:
    ini = (
        "[glidein_startup]\n"
        "args = -v std -name gfactory -entry entry_a -clientname vo1 -factory gfactory\n"
        "proxy_file_name = pilot_proxy\n"
        f"webbase = {web.web_base}\n\n"
        "[vm_properties]\nmax_lifetime = 3600\ndisable_shutdown = False\n"
    )
    credentials = base64.b64encode(gzip.compress(proxy_pem().encode())).decode()
    return (
        f"glideinwms_metadata={base64.b64encode(ini.encode()).decode()}"
        f"#### -cluster 7 -subcluster 0####glidein_credentials={credentials}"
    ).encode()


def test_legacy_user_data_is_refused_unless_the_image_allows_it(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    refused = run_bootstrap(_legacy_user_data(web), work_dir, tmp_path, pilot_user)
    assert_stopped_before_the_pilot(refused, "legacy glideinWMS form")

    allowed = run_bootstrap(
        _legacy_user_data(web), work_dir, tmp_path, pilot_user, "--allow-legacy"
    )
    assert allowed.pilot_started, allowed.stderr
    args = allowed.pilot_record()["args"]
    assert args.startswith("-v std -name gfactory")
    assert args.endswith("-cluster 7 -subcluster 0")
    assert "without a hash to check" in allowed.stderr
    assert "logs stay on this VM" in allowed.stderr


def test_the_proxy_file_is_private_to_the_pilot(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    run = run_bootstrap(encode(glidein_document(web)), work_dir, tmp_path, pilot_user)

    proxy = work_dir / "credentials" / "x509_proxy"
    assert run.pilot_started, run.stderr
    assert stat.S_IMODE(proxy.stat().st_mode) == 0o600
    assert stat.S_IMODE((work_dir / "credentials").stat().st_mode) == 0o700
    assert "BEGIN CERTIFICATE" not in run.stderr


def test_user_data_from_a_factory_the_image_does_not_accept_is_never_acted_on(
    web: FactoryWeb, work_dir: Path, tmp_path: Path, pilot_user: str | None
) -> None:
    document = glidein_document(web, disable_shutdown=True)
    others = "gfactory-prod,gfactory-itb"

    run = run_bootstrap(
        encode(document), work_dir, tmp_path, pilot_user, "--allowed-factories", others
    )

    assert_stopped_before_the_pilot(run, "which this image does not accept")
    # Nothing the document says is used: no status or logs to its factory, and its
    # disable_shutdown does not keep the VM up.
    assert web.requests == []
    accepted = run_bootstrap(
        encode(document),
        work_dir,
        tmp_path,
        pilot_user,
        "--allowed-factories",
        f"{others},{document['factory']}",
    )
    assert accepted.pilot_started, accepted.stderr
