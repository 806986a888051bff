"""glidein_startup.sh + the stand-in startd against a real `gwms collector serve` process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import classad2
import pytest

from gwms.pool import open_collector, open_schedd
from gwms_context import userdata
from tests.fakes.factory_web import FactoryWeb, glidein_document, proxy_pem
from tests.integration.pool_fixtures import CollectorProcess, make_collector
from tests.integration.test_bootstrap_run import (  # noqa: F401 (fixtures)
    pilot_user,
    run_bootstrap,
    work_dir,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WEB_AREA = REPO / "gwms" / "factory" / "web_area"
STARTUP = WEB_AREA / "glidein_startup.sh"
FRONTEND = "vo1-frontend@example.org"
PILOT_IDENTITY = "factory@example.org"  # the stand-in claims jobs with this token


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    server = make_collector(tmp_path_factory.mktemp("pool"))
    server.start()
    yield server
    server.stop()


def pool_config(collector: CollectorProcess, identity: str) -> dict[str, str]:
    token_file = collector.token_files[identity]
    return {"backend": "embedded", "url": collector.url, "token_file": str(token_file)}


def files_dir(tmp_path: Path, extra: dict[str, bytes] | None = None) -> tuple[Path, Path]:
    """A copy of the web area (plus `extra` files) and its sha256sum manifest."""
    directory = tmp_path / "files"
    directory.mkdir()
    for name in ("glidein_startup.sh", "gwms_startd.py", "validate_basics.sh"):
        shutil.copy(WEB_AREA / name, directory / name)
    for name, body in (extra or {}).items():
        (directory / name).write_bytes(body)
    manifest = tmp_path / "manifest.sha256"
    manifest.write_text(
        "".join(
            f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
            for path in sorted(directory.iterdir())
        )
    )
    return directory, manifest


def startup(
    work: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ["PATH"],
        "GWMS_PYTHON": sys.executable,
        "TMPDIR": str(work.parent),
    }
    environment.update(env or {})
    return subprocess.run(
        ["/bin/sh", str(STARTUP), "-dir", str(work), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )


def summary(work: Path) -> dict:
    return json.loads((work / "summary.json").read_text())


def test_the_stand_in_runs_a_submitted_job_reports_it_and_retires_when_idle(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    schedd = open_schedd(pool_config(collector, FRONTEND))
    job = classad2.ClassAd(
        {
            "Cmd": "/bin/sh",
            "Arguments": "-c 'echo hello from $GWMS_JOB_ID; exit 3'",
            "Requirements": classad2.ExprTree('TARGET.GLIDEIN_Entry_Name == "entry_a"'),
        }
    )
    [job_id] = schedd.submit([job])
    directory, manifest = files_dir(tmp_path)
    work = tmp_path / "glidein"

    result = startup(
        work,
        "-files-dir", str(directory), "-manifest", str(manifest),
        "-collector", collector.url, "-idtoken", str(collector.token_files[PILOT_IDENTITY]),
        "-id", "gl-1.0", "-factory", "gfactory", "-entry", "entry_a", "-clientname", "vo1.main",
        "-idle", "2", "-param_GLIDEIN_Poll_Interval", "0.2", "-param_GLIDEIN_Site", "Local",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    [done] = schedd.query(f"ClusterId == {job_id.split('.')[0]}", None)
    assert done["JobStatus"] == 4
    assert done["ExitCode"] == 3
    assert done["GwmsOutputTail"] == f"hello from {job_id}\n"
    assert done["RemoteHost"].startswith("slot1@gl-1.0@")
    report = summary(work)
    assert report["status"] == "ok"
    assert report["mode"] == "standin"
    startd = json.loads((work / "log" / "startd-summary.json").read_text())
    assert startd["jobs"] == [
        {"id": job_id, "exit_code": 3, "seconds": startd["jobs"][0]["seconds"]}
    ]
    assert startd["reason"].startswith("retired: idle for")
    config = (work / "glidein_config").read_text()
    assert "GLIDEIN_Site=Local\n" in config
    assert "GLIDEIN_VALIDATED=True\n" in config
    machines = open_collector(pool_config(collector, FRONTEND)).query(
        "Machine", 'GLIDEIN_ID == "gl-1.0"', None
    )
    assert machines == []  # invalidated on exit


def test_the_machine_ad_carries_the_glidein_attributes_while_it_runs(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    directory, manifest = files_dir(tmp_path)
    work = tmp_path / "glidein"
    argv = [
        "/bin/sh", str(STARTUP), "-dir", str(work), "-files-dir", str(directory),
        "-manifest", str(manifest), "-collector", collector.url,
        "-idtoken", str(collector.token_files[PILOT_IDENTITY]), "-id", "gl-2.1",
        "-entry", "entry_b", "-factory", "gfactory", "-clientname", "vo1.main", "-idle", "30",
    ]  # fmt: skip
    env = {"PATH": os.environ["PATH"], "GWMS_PYTHON": sys.executable}
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, start_new_session=True)
    try:
        pool = open_collector(pool_config(collector, FRONTEND))
        ads = []
        for _ in range(100):
            ads = pool.query("Machine", 'GLIDEIN_ID == "gl-2.1"', None)
            if ads:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        assert ads, "the stand-in never advertised"
        [ad] = ads
        assert ad["GLIDEIN_Entry_Name"] == "entry_b"
        assert ad["GLIDEIN_Factory"] == "gfactory"
        assert ad["State"] == "Unclaimed"
        assert ad["AuthenticatedIdentity"] == PILOT_IDENTITY
        assert ad["GLIDEIN_ToRetire"] > 0
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=20)
    assert summary(work)["status"] == "killed"
    assert (
        open_collector(pool_config(collector, FRONTEND)).query(
            "Machine", 'GLIDEIN_ID == "gl-2.1"', None
        )
        == []
    )


def test_a_failing_validation_script_stops_the_glidein_before_the_startd(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    failing = b"#!/bin/sh\necho 'no singularity on this node'\nexit 1\n"
    directory, manifest = files_dir(tmp_path, {"validate_zz_singularity.sh": failing})
    work = tmp_path / "glidein"

    result = startup(
        work, "-files-dir", str(directory), "-manifest", str(manifest), "-collector", collector.url
    )

    assert result.returncode == 1
    report = summary(work)
    assert report["status"] == "failed"
    assert "validation script validate_zz_singularity.sh failed (exit 1)" in report["reason"]
    assert "no singularity on this node" in report["reason"]
    assert not (work / "log" / "startd.log").exists()


def test_a_file_that_does_not_match_the_manifest_is_refused(tmp_path: Path) -> None:
    directory, manifest = files_dir(tmp_path)
    (directory / "gwms_startd.py").write_text("print('tampered')\n")
    work = tmp_path / "glidein"

    result = startup(
        work, "-files-dir", str(directory), "-manifest", str(manifest), "-collector", "x:1"
    )

    assert result.returncode == 1
    assert "gwms_startd.py has sha256" in summary(work)["reason"]
    assert "refusing to run it" in result.stderr


def test_as_a_batch_job_it_downloads_its_files_and_runs_condor_master_with_a_written_config(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_master = bin_dir / "condor_master"  # condor is not installable here: record the call
    fake_master.write_text(
        '#!/bin/sh\ncp "$CONDOR_CONFIG" "$(dirname "$CONDOR_CONFIG")/seen_config"\n'
        'echo "$@" > "$(dirname "$CONDOR_CONFIG")/seen_args"\n'
    )
    fake_master.chmod(0o755)
    files = {
        name: (WEB_AREA / name).read_bytes() for name in ("gwms_startd.py", "validate_basics.sh")
    }
    with FactoryWeb(token="unused", files=files) as web:
        web.files["manifest.json"] = json.dumps(web.sha256s()).encode()
        work = tmp_path / "glidein"
        result = startup(
            work, "-web", web.web_base, "-manifest", f"{web.web_base}/manifest.json",
            "-collector", "cm.example.org:9618", "-id", "gl-3.0", "-entry", "entry_c",
            "-lifetime", "7200", "-retire", "3600", "-idle", "600",
            env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
        )  # fmt: skip
        downloaded = sorted(path for method, path in web.requests if method == "GET")

    assert result.returncode == 0, result.stderr
    assert downloaded == ["/web/gwms_startd.py", "/web/manifest.json", "/web/validate_basics.sh"]
    assert (work / "seen_args").read_text() == "-f\n"
    config = (work / "seen_config").read_text()
    assert "COLLECTOR_HOST = cm.example.org:9618\n" in config
    assert "START = (time() < GLIDEIN_ToRetire) && (True)\n" in config
    assert "STARTD_NOCLAIM_SHUTDOWN = 600\n" in config
    assert 'GLIDEIN_Entry_Name = "entry_c"\n' in config
    assert "SLOT_TYPE_1_PARTITIONABLE = True\n" in config
    report = summary(work)
    assert (report["mode"], report["status"]) == ("condor", "ok")
    retire = int(
        next(line for line in config.splitlines() if line.startswith("GLIDEIN_ToRetire =")).split()[
            -1
        ]
    )
    assert retire == report["started"] + 3600


@pytest.mark.slow
def test_the_bootstrap_starts_the_real_pilot_which_runs_a_job_in_the_pool(
    collector: CollectorProcess,
    tmp_path: Path,
    work_dir: Path,  # noqa: F811 (the fixture)
    pilot_user: str | None,  # noqa: F811 (the fixture)
) -> None:
    schedd = open_schedd(pool_config(collector, FRONTEND))
    [job_id] = schedd.submit([classad2.ClassAd({"Cmd": "/bin/echo", "Arguments": "ran it"})])
    files = {
        name: (WEB_AREA / name).read_bytes()
        for name in ("glidein_startup.sh", "gwms_startd.py", "validate_basics.sh")
    }
    token = collector.token_files[PILOT_IDENTITY].read_text().strip()
    with FactoryWeb(token="upload-token", files=files) as web:
        document = glidein_document(
            web,
            pilot_args=["-collector", collector.url, "-idle", "2",
                        "-param_GLIDEIN_Poll_Interval", "0.2"],
            credentials={"x509_proxy": proxy_pem(), "idtoken": token},
        )  # fmt: skip
        run = run_bootstrap(userdata.encode(document), work_dir, tmp_path, pilot_user)
        uploads = dict(web.uploads)

    assert run.result.returncode == 0, run.stderr + str(uploads)
    [done] = schedd.query(f"ClusterId == {job_id.split('.')[0]}", None)
    assert (done["JobStatus"], done["GwmsOutputTail"]) == (4, "ran it\n")
    assert done["RemoteHost"].startswith(f"slot1@{web.batch}.2@")
    assert json.loads(uploads["2/pilot-summary.json.gz"])["status"] == "ok"
    assert b"retired: idle for" in uploads["2/pilot-log-startd.log.gz"]
    assert token not in run.stderr
    assert run.powered_off
