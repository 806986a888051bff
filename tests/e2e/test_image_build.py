"""The local qemu image build, for real, and a boot of the image it made.

Build: debootstrap source disk (cached), Packer's qemu builder under TCG, the real
playbooks/image.yml over SSH, a qcow2 and its manifest entry; the same command again is a
no-op. The image's file system is read with debugfs (no mounts).

Boot: the qcow2 under qemu (TCG, user-mode network restricted to one forwarded address
that reaches a stand-in factory web on the host's loopback) with an OpenStack config drive
(label config-2) carrying UserData v1. From the host: the bootstrap fetched the pilot file,
the pilot ran, logs arrived, the VM powered itself off. And a UserData whose pilot hash is
wrong: no pilot, logs still arrive, the VM powers off.

Run by the image suite of tests/run-suites.sh (`make test`, or alone `make image-test`;
marker `image_build`, deselected from plain pytest): the build takes about 6 minutes under
TCG, 5 more the first time for debootstrap (figures in bench/RESULTS.md).
Needs root (debootstrap), packer, qemu-system-x86, qemu-utils, debootstrap, e2fsprogs, xorriso.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gwms_context import userdata
from tests.fakes.factory_web import FactoryWeb, glidein_document

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("packer", "qemu-system-x86_64", "qemu-img", "debootstrap", "debugfs", "xorriso")
SEARCH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
# Inside the VM, the factory web is this address (qemu guestfwd to the host's loopback).
GUEST_WEB = "10.0.2.100"
TOKEN = "upload-token-image-boot-test-0123"
PILOT = b'#!/bin/sh\necho "image pilot says hello as $(id -un)"\nexit 0\n'
# qemu runs this for each guest connection to GUEST_WEB:80 (a guestfwd `tcp:` target would
# carry one connection only): stdin/stdout <-> the factory web on the host's loopback.
RELAY = """import os, socket, sys, threading
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    data = sock.recv(65536)
    if not data:
        break
    os.write(1, data)
"""

pytestmark = [
    pytest.mark.image_build,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap needs root"),
    pytest.mark.skipif(
        any(shutil.which(tool, path=SEARCH) is None for tool in TOOLS),
        reason=f"needs {', '.join(TOOLS)}",
    ),
]


def _gwms(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{SEARCH}"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gwms", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
    )
    return done, time.monotonic() - started


@dataclass
class Built:
    manifest: Path
    record: dict
    args: tuple[str, ...]
    seconds: float
    out: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One real build for the whole module (the slow part)."""
    tmp = tmp_path_factory.mktemp("image")
    manifest = tmp / "manifest.json"
    args = (
        "image",
        "build",
        "--provider",
        "qemu",
        "--ansible-vars",
        "images/ansible/offline.yml",
        "--manifest",
        str(manifest),
        "--output-dir",
        str(tmp / "artifacts"),
    )
    out, seconds = _gwms(*args, timeout=2100)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    print(f"\nfull qemu build: {seconds:.0f} s")
    [record] = json.loads(manifest.read_text())["builds"]
    return Built(manifest, record, args, seconds, out)


def _debugfs(raw: Path, command: str) -> str:
    done = subprocess.run(
        ["debugfs", "-R", command, str(raw)], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_the_qemu_image_has_the_bootstrap_and_no_build_key(built: Built, tmp_path: Path) -> None:
    assert built.record["name"] == "qemu"
    assert built.record["region"] == "local"
    image = Path(built.record["image"])
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(info.stdout)["format"] == "qcow2"
    assert {Path(f).name for f in built.record["files"]} >= {"vmlinuz", "initrd.img"}

    raw = tmp_path / "image.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    assert json.loads(_debugfs(raw, "cat /etc/gwms/image.json"))["builder"] == "qemu"
    wants = _debugfs(raw, "ls -l /etc/systemd/system/multi-user.target.wants")
    assert "glidein-bootstrap.service" in wants
    assert "bootstrap.py" in _debugfs(raw, "ls -l /opt/gwms-context/gwms_context")
    assert "authorized_keys" not in _debugfs(raw, "ls -l /root/.ssh")


def test_an_unchanged_rebuild_is_a_no_op(built: Built) -> None:
    again, seconds = _gwms(*built.args, timeout=120)
    assert again.returncode == 0, again.stderr
    print(f"\nno-op rebuild: {seconds:.1f} s")
    assert again.stdout.startswith("nothing to do: qemu in local image")
    assert "inputs unchanged" in again.stdout
    assert seconds < 30
    assert len(json.loads(built.manifest.read_text())["builds"]) == 1


@dataclass
class Boot:
    returncode: int | None
    seconds: float
    pilot_started_after: float | None
    console: str


def _config_drive(tmp: Path, user_data: bytes) -> Path:
    latest = tmp / "drive" / "openstack" / "latest"
    latest.mkdir(parents=True)
    (latest / "user_data").write_bytes(user_data)
    meta = {"uuid": "0b7f6a4e-7d0b-4f43-a3a8-image-boot", "name": "gl-boot-0", "launch_index": 0}
    (latest / "meta_data.json").write_text(json.dumps(meta))
    iso = tmp / "config-2.iso"
    subprocess.run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "config-2",
            "-J",
            "-R",
            "-o",
            str(iso),
            str(tmp / "drive"),
        ],
        check=True,
    )
    return iso


def _boot(built: Built, web: FactoryWeb, user_data: bytes, tmp: Path, limit: float) -> Boot:
    files = {Path(f).name: f for f in built.record["files"]}
    overlay = tmp / "vm.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            built.record["image"],
            str(overlay),
        ],
        check=True,
    )
    port = web.url.rsplit(":", 1)[1]
    relay = tmp / "relay.py"
    relay.write_text(RELAY)
    console = tmp / "console.log"
    argv = [
        "qemu-system-x86_64",
        "-machine",
        "accel=tcg",
        "-m",
        "1024",
        "-smp",
        "2",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
        "-no-reboot",
        "-kernel",
        files["vmlinuz"],
        "-initrd",
        files["initrd.img"],
        "-append",
        "root=/dev/vda rw console=ttyS0",
        "-drive",
        f"file={overlay},if=virtio,format=qcow2",
        "-drive",
        f"file={_config_drive(tmp, user_data)},media=cdrom,readonly=on",
        "-netdev",
        f"user,id=n0,restrict=on,guestfwd=tcp:{GUEST_WEB}:80-cmd:{sys.executable} {relay} {port}",
        "-device",
        "virtio-net,netdev=n0",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    pilot_at = None
    try:
        while proc.poll() is None and time.monotonic() - started < limit:
            if pilot_at is None and "pilot_started" in web.stages():
                pilot_at = time.monotonic() - started
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    seconds = time.monotonic() - started
    text = console.read_text(errors="replace") if console.exists() else ""
    returncode = proc.returncode if seconds < limit else None
    return Boot(returncode, seconds, pilot_at, text)


@pytest.fixture
def web() -> Iterator[FactoryWeb]:
    with FactoryWeb(token=TOKEN, files={"glidein_startup.sh": PILOT}) as server:
        yield server


def _document(web: FactoryWeb, **overrides: object) -> dict:
    guest = f"http://{GUEST_WEB}"
    return glidein_document(
        web,
        web_base=f"{guest}/web",
        log_upload={"url": guest + web.log_url.removeprefix(web.url), "token": web.token},
        **overrides,
    )


def test_the_image_boots_runs_the_pilot_ships_logs_and_powers_off(
    built: Built, web: FactoryWeb, tmp_path: Path
) -> None:
    boot = _boot(built, web, userdata.encode(_document(web)), tmp_path, limit=600)
    started = "never" if boot.pilot_started_after is None else f"{boot.pilot_started_after:.0f} s"
    print(
        f"\nboot (from qemu start): pilot started after {started},"
        f" power-off after {boot.seconds:.0f} s"
    )
    assert boot.returncode == 0, boot.console[-3000:]
    assert ("GET", "/web/glidein_startup.sh") in web.requests
    stages = web.stages()
    assert stages[:4] == ["fetched", "verified", "files", "pilot_started"], boot.console[-3000:]
    assert stages[-1] == "shutdown"
    assert web.uploads["0/pilot.out.gz"].startswith(b"image pilot says hello as ")
    # meta_data.json (the launch index) comes from the same config drive: the VM never
    # waits on the Nova metadata service, which does not exist here.
    log = next(data for key, data in web.uploads.items() if key.endswith("bootstrap.log.gz"))
    assert b"169.254.169.254" not in log, log.decode(errors="replace")[-3000:]


def test_a_wrong_pilot_hash_starts_no_pilot_but_ships_logs_and_powers_off(
    built: Built, web: FactoryWeb, tmp_path: Path
) -> None:
    document = _document(web, files={"glidein_startup.sh": "0" * 64})
    boot = _boot(built, web, userdata.encode(document), tmp_path, limit=600)
    assert boot.returncode == 0, boot.console[-3000:]
    assert "pilot_started" not in web.stages()
    assert any(key.endswith("bootstrap.log.gz") for key in web.uploads), web.requests
    assert web.stages()[-1] == "shutdown"
