"""The real `moto_server` (EC2, STS, ... over HTTP) as a subprocess on 127.0.0.1, for tests.

One server per test session (it takes about a second to start); `moto` gives each test a
clean cloud by POSTing to moto's `/moto-api/reset`. The process is stopped by its PID.
Use it from a test module with `from tests.fakes.moto_server import moto, moto_server`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REGION = "us-east-1"
# moto accepts any key; these never reach a real cloud.
ACCESS_KEY_ID = "AKIAGWMSTESTKEY00001"
SECRET_ACCESS_KEY = "gwms-test-secret-access-key-not-real"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_executable() -> Path:
    """`moto_server` next to the running interpreter (the project's virtualenv)."""
    return Path(sys.executable).parent / "moto_server"


@dataclass
class MotoServer:
    """A `moto_server` subprocess; `url` is its endpoint for every AWS service it fakes."""

    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.port = free_port()
        argv = [str(moto_executable()), "-H", "127.0.0.1", "-p", str(self.port)]
        env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited early:\n{self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/moto-api/data.json", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto_server not answering after {timeout}s:\n{self.log.read_text()}")

    def reset(self) -> None:
        """Forget every resource (instances, roles, ...): a clean cloud for the next test."""
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL by PID if it does not exit within 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto_server for the whole session."""
    if not moto_executable().exists():
        pytest.skip(f"moto_server not installed at {moto_executable()} (pip install moto[server])")
    server = MotoServer(log=tmp_path_factory.mktemp("moto") / "moto_server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The session's moto_server, reset to an empty cloud for this test."""
    moto_server.reset()
    return moto_server


def write_key_pair_file(path: Path, key_id: str = ACCESS_KEY_ID) -> Path:
    """An AWS shared-credentials file with a test key pair, created 0600."""
    text = f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path
