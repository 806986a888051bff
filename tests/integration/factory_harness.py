"""Helpers for the factory's crash, throttling and security suites: a real factory process.

The suites drive `gwms factory run --once` as a subprocess against the real `moto_server`
(optionally behind `tests.fakes.faulty_proxy`) and a real `gwms collector serve`, then
judge the result from outside: instances in moto by tag, the journal on disk, the logs.

Two knobs:
- `whole_batches=True` (the default) writes `all_or_nothing: true` on the `ec2` cloud:
  moto launches exactly MinCount instances (DESIGN.md §3), so batches must ask for all.
- `later=S` runs the process S seconds in the future through libfaketime (Debian package
  `libfaketime`): "the factory restarted S seconds later", so a batch a crash left
  `launching` with nothing in the cloud is past the reconcile listing grace (2 min).
"""

from __future__ import annotations

import base64
import email
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FACTORY = "gfactory-faults"
FACTORY_ID = "factory@example.org"
ENTRY = "ec2_test"
FRONTEND = "vo1-frontend"
FRONTEND_ID = "vo1-frontend@example.org"
IMAGE = "ami-03cf127a"  # one of moto's stock AMIs
REGION = "us-east-1"
# Debian's libfaketime, whatever the architecture directory.
FAKETIME_LIB = next(
    iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))),
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
)
BLOB = re.compile(r"[A-Za-z0-9+/]{80,}={0,2}")
LIVE = ("pending", "running", "shutting-down", "stopping", "stopped")


# --- the factory configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class FrontendRef:
    """A frontend the factory authorises: its name and collector identity."""

    name: str
    identity: str


def write_factory_config(
    workdir: Path,
    *,
    collector_url: str,
    token_file: Path,
    endpoint_url: str,
    key_file: Path,
    keys_dir: Path | None = None,
    frontends: Sequence[FrontendRef] = (FrontendRef(FRONTEND, FRONTEND_ID),),
    max_running: int = 5,
    max_idle: int = 5,
    per_cycle: int = 5,
    rate_limits: Mapping[str, tuple[float, float]] | None = None,
    retries: Mapping[str, Any] | None = None,
    log_level: str = "INFO",
    whole_batches: bool = True,
) -> Path:
    """A factory file with one `ec2` cloud at `endpoint_url` (moto, or a proxy before it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "state"
    lines = [
        f"name: {FACTORY}",
        f'collector: {{backend: embedded, url: "{collector_url}", token_file: "{token_file}"}}',
        f"state_dir: {state}",
        "cycle: 60",
        f"log_level: {log_level}",
        'web: {listen: "127.0.0.1:8319", base_url: "http://127.0.0.1:8319"}',
        f'keys: {{dir: "{keys_dir or state / "keys"}"}}',
        "frontends:",
        *(f'  - {{name: {f.name}, identity: "{f.identity}", max_glideins: 50}}' for f in frontends),
        "clouds:",
        "  - name: moto",
        "    type: ec2",
        f"    region: {REGION}",
        f'    endpoint_url: "{endpoint_url}"',
        f'    credentials: {{type: key_pair, file: "{key_file}"}}',
        f"    all_or_nothing: {'true' if whole_batches else 'false'}",
    ]
    if rate_limits:
        lines.append("    rate_limits:")
        lines += [
            f"      {name}: {{capacity: {cap:g}, refill_per_second: {refill:g}}}"
            for name, (cap, refill) in rate_limits.items()
        ]
    if retries:
        lines.append(f"    retries: {json.dumps(dict(retries))}")
    lines += [
        "entries:",
        f"  - name: {ENTRY}",
        "    cloud: moto",
        f"    image: {IMAGE}",
        "    instance_types: [t3.micro]",
        "    auth_methods: [x509_proxy]",
        f"    limits: {{max_running: {max_running}, max_idle: {max_idle},"
        f" max_launches_per_cycle: {per_cycle}}}",
        "    lifetimes: {max: 2h, retire: 1h30m, idle_shutdown: 10m}",
        "    proxy_margin: 1h",
    ]
    path = workdir / "factory.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- running the factory ------------------------------------------------------------------------


@dataclass(frozen=True)
class FactoryRun:
    """One finished factory process."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def factory_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "gwms", "factory", "run", "--once", "--config", str(config)]


def factory_env(fault: str | None = None, later: int = 0) -> dict[str, str]:
    """The environment of a factory process: a fault point, a clock `later` seconds ahead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GWMS_FAULT"))}
    env.update(NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", PYTHONPATH=str(REPO))
    if fault:
        env["GWMS_FAULT_POINT"] = fault
    if later:
        env.update(
            LD_PRELOAD=str(FAKETIME_LIB),
            FAKETIME=f"+{int(later)}s",
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )
    return env


def start_factory(
    config: Path, *, fault: str | None = None, later: int = 0
) -> subprocess.Popen[str]:
    """A factory process running one cycle; the caller ends it by its handle."""
    return subprocess.Popen(
        factory_argv(config),
        cwd=REPO,
        env=factory_env(fault, later),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], started: float, timeout: float = 120) -> FactoryRun:
    """Wait for `proc` (SIGKILL by PID past `timeout`) and collect its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"factory still running after {timeout}s:\n{err[-4000:]}") from None
    return FactoryRun(proc.returncode, out, err, time.monotonic() - started)


def run_factory(config: Path, *, fault: str | None = None, later: int = 0) -> FactoryRun:
    """`gwms factory run --once --config config` as a subprocess, to its end."""
    started = time.monotonic()
    return finish(start_factory(config, fault=fault, later=later),
                  started)  # fmt: skip


def faketime_available() -> bool:
    return FAKETIME_LIB.exists()


# --- the frontend side --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A delegated X.509 proxy and the lines of its private key (secrets to look for)."""

    proxy_pem: str
    key_lines: tuple[str, ...]


def make_pki(now: datetime | None = None) -> Pki:
    from gwms.credentials.proxy import create_proxy
    from gwms.credentials.testca import make_ca, make_user_cert

    now = now or datetime.now(UTC)
    ca_cert, ca_key = make_ca("factory faults test CA")
    cert, key = make_user_cert(
        ca_cert, ca_key, "vo1 pilot", hours=48, not_before=now - timedelta(hours=1)
    )
    pem = create_proxy(cert, key, (ca_cert,), hours=24, now=now).to_pem().decode()
    return Pki(proxy_pem=pem, key_lines=tuple(private_key_lines(pem)))


def open_pool(url: str, token_file: Path) -> Any:
    from gwms.pool import open_collector

    return open_collector({"backend": "embedded", "url": url, "token_file": str(token_file)})


def entry_ad(pool: Any) -> Any:
    """The parsed entry ad the factory published (the frontend seals to its key)."""
    from gwms.protocol import parse_entry_ad
    from gwms.protocol.wire import AdKind

    ads = pool.query(AdKind.ENTRY.value, f'FactoryName == "{FACTORY}"')
    assert len(ads) == 1, f"expected one entry ad of {FACTORY}, found {len(ads)}"
    return parse_entry_ad(ads[0])


def request_ads(
    pool: Any,
    pki: Pki,
    *,
    idle: int,
    max_running: int,
    group: str = "main",
    frontend: str = FRONTEND,
    identity: str = FRONTEND_ID,
    now: datetime | None = None,
) -> tuple[Any, Any]:
    """What a frontend publishes: a sealed request and its sealed credential ad (unsent)."""
    from gwms.credentials.model import X509ProxyCredential
    from gwms.protocol import (
        build_credential_ad,
        build_request_ad,
        make_credential_ad,
        make_request,
    )

    now = now or datetime.now(UTC)
    entry = entry_ad(pool)
    cred = X509ProxyCredential(id="vo1-proxy", trust_domain="grid", pem=pki.proxy_pem)
    request = make_request(
        entry, frontend=frontend, group=group, identity=identity, idle=idle,
        max_running=max_running, now=now, credential_ids=("vo1-proxy",),
    )  # fmt: skip
    credentials = make_credential_ad(
        factory=FACTORY, public_key_pem=entry.public_key_pem, frontend=frontend,
        identity=identity, credentials=[cred], now=now,
    )  # fmt: skip
    return build_request_ad(request), build_credential_ad(credentials)


def publish_request(pool: Any, pki: Pki, *, idle: int, max_running: int, **kw: Any) -> None:
    """Seal and advertise a request and its credential ad as the frontend `pool` speaks for."""
    pool.advertise(list(request_ads(pool, pki, idle=idle, max_running=max_running, **kw)))


# --- the cloud and the journal, seen from outside ----------------------------------------------


@dataclass(frozen=True)
class Vm:
    cloud_id: str
    batch: str
    index: int
    client: str
    state: str


def ec2_client(url: str) -> Any:
    import boto3

    from tests.fakes.moto_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY

    return boto3.client(
        "ec2",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def live_vms(ec2: Any, factory: str = FACTORY) -> list[Vm]:
    """Every live instance moto holds with this factory's tag."""
    found = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag:gwms:factory", "Values": [factory]},
            {"Name": "instance-state-name", "Values": list(LIVE)},
        ]
    )
    for page in pages:
        for reservation in page["Reservations"]:
            for raw in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
                found.append(
                    Vm(
                        raw["InstanceId"],
                        tags.get("gwms:batch", ""),
                        int(raw.get("AmiLaunchIndex", 0)),
                        tags.get("gwms:client", ""),
                        raw["State"]["Name"],
                    )
                )
    return found


def userdata_of(ec2: Any, cloud_id: str) -> bytes:
    answer = ec2.describe_instance_attribute(InstanceId=cloud_id, Attribute="userData")
    return base64.b64decode(answer["UserData"]["Value"])


@dataclass(frozen=True)
class JournalView:
    launching: tuple[str, ...]  # batch ids still `launching`
    live_cloud_ids: frozenset[str]  # cloud ids of journaled glideins not `gone`


def read_journal(state_dir: Path) -> JournalView:
    from gwms.factory.journal import LIVE_STATES, BatchState, Journal

    with Journal.in_state_dir(state_dir) as journal:
        launching = tuple(b.batch_id for b in journal.batches(BatchState.LAUNCHING))
        live = frozenset(g.cloud_id for g in journal.glideins(LIVE_STATES) if g.cloud_id)
    return JournalView(launching, live)


def convergence_problems(ec2: Any, state_dir: Path, expected: int, client: str) -> list[str]:
    """Why the cloud and journal are not settled at `expected` VMs for `client` ([] if they are)."""
    vms = live_vms(ec2)
    problems = []
    mine = [vm for vm in vms if vm.client == client]
    if len(mine) != expected:
        problems.append(f"{len(mine)} live VMs for {client}, expected {expected}")
    slots = [(vm.batch, vm.index) for vm in vms]
    if len(slots) != len(set(slots)):
        problems.append(f"two VMs share a (batch, launch index): {sorted(slots)}")
    journal = read_journal(state_dir)
    if journal.launching:
        problems.append(f"batches left launching: {list(journal.launching)}")
    leaked = {vm.cloud_id for vm in vms} - journal.live_cloud_ids
    if leaked:
        problems.append(f"VMs the journal does not know (leaked): {sorted(leaked)}")
    return problems


def private_key_lines(pem: str) -> list[str]:
    """The base64 lines of every private key block in a PEM text (each one a secret)."""
    lines, inside = [], False
    for line in pem.splitlines():
        if line.startswith("-----"):
            inside = "PRIVATE KEY-----" in line and line.startswith("-----BEGIN")
        elif inside and len(line) >= 40:
            lines.append(line)
    return lines


def secret_forms(b64_secret: str) -> list[str]:
    """A base64 secret as stored, and as hex: the ways a careless log line could show it."""
    return [b64_secret, base64.b64decode(b64_secret).hex()]


def unwrapped(text: str) -> list[str]:
    """What base64 blobs in `text` hide: gzip (UserData is base64 of gzip MIME) and MIME parts.

    A log line that shows a RunInstances body shows the UserData this way, with the glidein
    proxy and the upload token inside; a plain substring search would miss them.
    """
    found = []
    for blob in BLOB.findall(text):
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4))
        except ValueError:
            continue
        if raw[:2] != b"\x1f\x8b":
            continue
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            continue
        found.append(raw.decode(errors="replace"))
        for part in email.message_from_bytes(raw).walk():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found.append(payload.decode(errors="replace"))
    return found


def find_secrets(texts: Iterable[tuple[str, str]], secrets: Mapping[str, str]) -> list[str]:
    """'<where>: <secret label>' for each secret (label -> value) found in a (where, text).

    Texts are searched as they are and through what their base64 blobs hide (`unwrapped`).
    Only labels are reported, so a failure message does not spread the secret further.
    """
    wanted = {label: value for label, value in secrets.items() if value}
    leaks = []
    for where, text in texts:
        for shown in (text, *unwrapped(text)):
            leaks += [f"{where}: {label}" for label, value in wanted.items() if value in shown]
    return sorted(set(leaks))
