"""Proxies made by `gwms proxy` pass the real tools: `openssl verify` and grid-proxy-info."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gwms.credentials import proxy as px
from gwms.credentials.testca import TestPki, write_test_pki

pytestmark = pytest.mark.integration

INSTALL_HINT = "`make test` installs it (Debian packages globus-proxy-utils and openssl)"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH; {INSTALL_HINT}")
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return write_test_pki(tmp_path_factory.mktemp("pki"), user_cn="Dana Integration", hours=48)


def tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("X509_")}
    env["LC_ALL"] = "C"
    return env


def gwms(*argv: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "gwms", *argv],
        capture_output=True,
        text=True,
        check=False,
        env=tool_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def grid_proxy_info(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("grid-proxy-info"), "-f", str(path), *options],
        capture_output=True,
        text=True,
        check=False,
        env=tool_env(),
        timeout=30,
    )


def openssl_verify(proxy_file: Path, ca_file: Path, *, allow_proxies: bool = True) -> str:
    """`openssl verify` of the proxy certificate with its chain as untrusted intermediates."""
    proxy = px.load_proxy(proxy_file)
    work = proxy_file.parent
    leaf, chain = work / f"{proxy_file.name}.leaf", work / f"{proxy_file.name}.chain"
    leaf.write_bytes(proxy.cert.public_bytes(serialization.Encoding.PEM))
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in proxy.chain))
    argv = [tool("openssl"), "verify", "-CAfile", str(ca_file), "-untrusted", str(chain)]
    if allow_proxies:
        argv.insert(2, "-allow_proxy_certs")
    result = subprocess.run(
        [*argv, str(leaf)], capture_output=True, text=True, check=False, timeout=30
    )
    return f"rc={result.returncode} {result.stdout}{result.stderr}"


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[tuple[str, ...], ...]  # gwms argv; {prev} is the previous file, {out} this one
    expected_type: str


CASES = [
    Case("init", (("init", "--hours", "12"),), px.TYPE_IMPERSONATION),
    Case("init --limited", (("init", "--limited"),), px.TYPE_LIMITED),
    Case(
        "derive full from full",
        (("init",), ("derive", "--hours", "6")),
        px.TYPE_IMPERSONATION,
    ),
    Case(
        "derive limited from full",
        (("init",), ("derive", "--hours", "6", "--limited")),
        px.TYPE_LIMITED,
    ),
    Case(
        "derive from limited stays limited",
        (("init", "--limited"), ("derive", "--hours", "6"), ("derive", "--hours", "2")),
        px.TYPE_LIMITED,
    ),
]


def make(pki: TestPki, case: Case, directory: Path) -> Path:
    previous: Path | None = None
    for index, (command, *options) in enumerate(case.steps):
        out = directory / f"proxy{index}.pem"
        if command == "init":
            source = ["--cert", str(pki.user_cert), "--key", str(pki.user_key)]
        else:
            source = ["--from", str(previous)]
        gwms("proxy", command, *source, *options, "-o", str(out))
        previous = out
    assert previous is not None
    return previous


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_proxy_passes_openssl_verify_and_grid_proxy_info(
    case: Case, pki: TestPki, tmp_path: Path
) -> None:
    proxy_file = make(pki, case, tmp_path)

    verdict = openssl_verify(proxy_file, pki.ca_cert)
    assert verdict.startswith("rc=0 "), verdict
    assert ": OK" in verdict, verdict

    exists = grid_proxy_info(proxy_file, "-exists", "-valid", "1:00")
    assert exists.returncode == 0, exists.stdout + exists.stderr

    ours = json.loads(gwms("proxy", "info", "--json", str(proxy_file)).stdout)
    assert ours["type"] == case.expected_type
    theirs = grid_proxy_info(proxy_file, "-type")
    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stdout.strip() == ours["type"]
    assert grid_proxy_info(proxy_file, "-identity").stdout.strip() == ours["identity"]
    assert grid_proxy_info(proxy_file, "-subject").stdout.strip() == ours["subject"]
    assert grid_proxy_info(proxy_file, "-strength").stdout.strip() == str(ours["strength"])
    left = int(grid_proxy_info(proxy_file, "-timeleft").stdout.strip())
    assert abs(left - ours["time_left_seconds"]) <= 5


def test_grid_proxy_info_rejects_a_proxy_shorter_than_asked(pki: TestPki, tmp_path: Path) -> None:
    out = tmp_path / "short.pem"
    gwms(
        "proxy", "init", "--cert", str(pki.user_cert), "--key", str(pki.user_key),
        "--hours", "0.5", "-o", str(out),
    )  # fmt: skip
    assert grid_proxy_info(out, "-exists", "-valid", "1:00").returncode == 1
    assert grid_proxy_info(out, "-exists", "-valid", "0:10").returncode == 0


def test_openssl_rejects_the_proxy_under_another_ca_or_without_proxy_support(
    pki: TestPki, tmp_path: Path
) -> None:
    out = tmp_path / "p.pem"
    gwms(
        "proxy", "init", "--cert", str(pki.user_cert), "--key", str(pki.user_key),
        "-o", str(out),
    )  # fmt: skip
    stranger = write_test_pki(tmp_path / "stranger")
    assert not openssl_verify(out, stranger.ca_cert).startswith("rc=0 ")
    assert not openssl_verify(out, pki.ca_cert, allow_proxies=False).startswith("rc=0 ")
