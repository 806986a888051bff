"""VO overlays (download, hash, unpack, run, limits) and log shipping, over real HTTP."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gwms_context import factoryweb, logship, overlays, privileges
from tests.fakes.factory_web import FactoryWeb

pytestmark = pytest.mark.integration

TOKEN = "logship-test-token-abcdef"
ME = privileges.current()


@pytest.fixture
def web() -> Iterator[FactoryWeb]:
    with FactoryWeb(token=TOKEN) as server:
        yield server


def publish(web: FactoryWeb, name: str, body: bytes, **extra: object) -> dict:
    web.files[name] = body
    return {
        "name": name,
        "url": f"{web.web_base}/{name}",
        "sha256": hashlib.sha256(body).hexdigest(),
        "privileged": False,
        **extra,
    }


def tarball(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o4755
            archive.addfile(info, io.BytesIO(body))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buffer.getvalue()


def run_overlay(overlay: dict, tmp_path: Path, timeout: float = 10) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    overlays.run_one(
        overlay,
        False,
        overlays_dir=str(tmp_path / "overlays"),
        logs_dir=str(logs),
        pilot=ME,
        env={"PATH": os.environ["PATH"], "GLIDEIN_ID": "gl-1.0"},
        timeout=timeout,
    )
    return logs


def test_a_script_overlay_runs_in_its_dir_with_the_glidein_environment(
    web: FactoryWeb, tmp_path: Path
) -> None:
    script = b'echo "$GLIDEIN_ID $GWMS_OVERLAY_NAME $(pwd)"\n'  # no #!: run with /bin/sh

    logs = run_overlay(publish(web, "setup", script), tmp_path)

    home = tmp_path / "overlays" / "setup"
    assert (logs / "overlay-setup.log").read_text() == f"gl-1.0 setup {home}\n"


def test_a_tarball_overlay_runs_its_overlay_sh_without_set_id_bits(
    web: FactoryWeb, tmp_path: Path
) -> None:
    body = tarball({"overlay.sh": b"#!/bin/sh\ncat data.txt\n", "data.txt": b"from the tarball\n"})

    logs = run_overlay(publish(web, "vo.tar.gz", body), tmp_path)

    assert (logs / "overlay-vo.tar.gz.log").read_text() == "from the tarball\n"
    mode = (tmp_path / "overlays/vo.tar.gz/tree/overlay.sh").stat().st_mode
    assert mode & 0o7000 == 0


@pytest.mark.parametrize(
    ("members", "links", "reason"),
    [
        ({"../escape.sh": b"x"}, None, "points outside the overlay"),
        ({"overlay.sh": b"x"}, {"etc": "/etc"}, "points outside the overlay"),
        ({"setup.sh": b"x"}, None, "has no overlay.sh at its top level"),
    ],
    ids=["dot-dot", "absolute-symlink", "no-entry-point"],
)
def test_unsafe_or_incomplete_tarballs_are_refused(
    web: FactoryWeb, tmp_path: Path, members: dict, links: dict | None, reason: str
) -> None:
    with pytest.raises(overlays.OverlayError, match=reason):
        run_overlay(publish(web, "bad.tgz", tarball(members, links)), tmp_path)
    assert not (tmp_path / "escape.sh").exists()


def test_an_overlay_with_the_wrong_hash_never_runs(web: FactoryWeb, tmp_path: Path) -> None:
    overlay = publish(web, "setup", b"touch ran\n")
    web.files["setup"] = b"touch ran; echo tampered\n"

    with pytest.raises(overlays.OverlayError, match="refusing to run it"):
        run_overlay(overlay, tmp_path)
    assert not list(tmp_path.rglob("ran"))


def test_an_overlay_past_its_time_limit_is_stopped(web: FactoryWeb, tmp_path: Path) -> None:
    with pytest.raises(overlays.OverlayError, match="killed at its 1 s time limit"):
        run_overlay(publish(web, "slow", b"sleep 30\n"), tmp_path, timeout=1)


def test_a_missing_overlay_is_a_clear_failure(web: FactoryWeb, tmp_path: Path) -> None:
    overlay = publish(web, "gone", b"true\n")
    del web.files["gone"]

    with pytest.raises(overlays.OverlayError, match=r"overlay gone: GET .* \(last: HTTP 404\)"):
        run_overlay(overlay, tmp_path)


def shipper(web: FactoryWeb, sources: list, **kw: object) -> logship.LogShipper:
    return logship.LogShipper(
        log_url=web.log_url,
        token=TOKEN,
        launch_index=4,
        glidein_id=f"{web.batch}.4",
        sources=lambda: sources,
        **kw,  # type: ignore[arg-type]
    )


def test_logs_go_up_gzipped_once_per_change_and_status_reports_reach_the_factory(
    web: FactoryWeb, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "bootstrap.log"
    log.write_text("first line\n")
    ship = shipper(web, [("bootstrap.log", str(log), None)])
    caplog.set_level(logging.DEBUG)

    assert ship.ship() == 1
    assert ship.ship() == 0  # unchanged: not sent again
    log.write_text("first line\nsecond line\n")
    assert ship.ship() == 1
    assert ship.report("verified", "proxy ok")

    assert web.uploads["4/bootstrap.log.gz"] == b"first line\nsecond line\n"
    [status] = web.statuses
    assert (status["stage"], status["glidein_id"], status["launch_index"]) == (
        "verified",
        f"{web.batch}.4",
        4,
    )
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(ship)


def test_a_big_log_keeps_its_end_and_says_what_was_cut(web: FactoryWeb, tmp_path: Path) -> None:
    log = tmp_path / "pilot.out"
    log.write_bytes(b"x" * 5000 + b"THE END\n")

    shipper(web, [("pilot.out", str(log), None)], max_file_bytes=100).ship()

    body = web.uploads["4/pilot.out.gz"]
    assert body.startswith(b"[gwms: first 4908 bytes of 5008 dropped")
    assert body.endswith(b"x" * 92 + b"THE END\n")


def test_a_pilot_cannot_make_root_ship_a_file_outside_its_dir(
    web: FactoryWeb, tmp_path: Path
) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:secret\n")
    pilot_dir = tmp_path / "pilot"
    (pilot_dir / "log").mkdir(parents=True)
    (pilot_dir / "summary.json").symlink_to(secret)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.log").write_text("root:secret\n")
    (pilot_dir / "log" / "dir-link").symlink_to(tmp_path / "elsewhere")

    sent = shipper(
        web,
        [
            ("pilot-summary.json", str(pilot_dir / "summary.json"), str(pilot_dir)),
            ("pilot-log-x", str(pilot_dir / "log" / "dir-link" / "x.log"), str(pilot_dir)),
        ],
    ).ship()

    assert sent == 0
    assert web.uploads == {}


def test_a_wrong_token_is_reported_once_and_never_retried(web: FactoryWeb, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("x\n")
    ship = logship.LogShipper(
        log_url=web.log_url,
        token="wrong",
        launch_index=0,
        glidein_id="g",
        sources=lambda: [("a.log", str(log), None)],
    )

    assert ship.ship() == 0
    assert not ship.report("failed", "x")
    assert len(web.refused) == 2


def test_the_status_url_follows_the_factory_web_layout() -> None:
    assert (
        logship.status_url("http://f:8319/logs/entry_a/vo1.main/gl-7", 3)
        == "http://f:8319/status/entry_a/vo1.main/gl-7/3"
    )
    assert logship.status_url("http://f/upload/gl-7/", 0) == "http://f/upload/gl-7/0/status"


def test_downloads_check_the_hash_and_leave_nothing_behind_on_a_mismatch(
    web: FactoryWeb, tmp_path: Path
) -> None:
    web.files["f"] = b"content"
    good = hashlib.sha256(b"content").hexdigest()

    assert factoryweb.download(f"{web.web_base}/f", str(tmp_path / "f"), good) == good
    with pytest.raises(factoryweb.IntegrityError):
        factoryweb.download(f"{web.web_base}/f", str(tmp_path / "g"), "0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_the_example_overlay_runs_as_documented(web: FactoryWeb, tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "contextualization/overlays/example"
    body = tarball({"overlay.sh": (example / "overlay.sh").read_bytes()})
    pilot_dir = tmp_path / "pilot"
    pilot_dir.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()

    overlays.run_one(
        publish(web, "vo-setup.tar.gz", body),
        False,
        overlays_dir=str(tmp_path / "overlays"),
        logs_dir=str(logs),
        pilot=ME,
        env={
            "PATH": os.environ["PATH"],
            "GLIDEIN_ID": "gl-9.0",
            "GLIDEIN_ENTRY": "entry_a",
            "GLIDEIN_WORK_DIR": str(pilot_dir),
        },
    )

    assert (
        "overlay vo-setup.tar.gz for glidein gl-9.0 (entry entry_a)"
        in (logs / "overlay-vo-setup.tar.gz.log").read_text()
    )
    assert (pilot_dir / "vo-setup.env").read_text().startswith("VO_SETUP_DONE=")
