"""A real `gwms collector serve` subprocess on 127.0.0.1, started and stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from gwms.pool.embedded.tokens import add_token, write_token_file

IDENTITIES = ("vo1-frontend@example.org", "factory@example.org")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CollectorProcess:
    """One `gwms collector serve` process over `db`; `restart()` keeps the database."""

    workdir: Path
    db: Path
    tokens: Path | None
    token_files: dict[str, Path] = field(default_factory=dict)
    tls: tuple[Path, Path] | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "collector.log"

    def start(self) -> None:
        self.port = free_port()
        argv = [
            sys.executable, "-m", "gwms", "collector", "serve",
            "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        if self.tokens is not None:
            argv += ["--tokens", str(self.tokens)]
        if self.tls is not None:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 20.0) -> None:
        verify = str(self.tls[0]) if self.tls else True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited early:\n{self.log.read_text()}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1, verify=verify).ok:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError(f"collector not healthy after {timeout}s:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the process by its PID and wait; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        code = self.proc.returncode
        self.proc = None
        return code

    def restart(self) -> None:
        self.stop()
        self.start()


def make_collector(workdir: Path, *, with_tokens: bool = True) -> CollectorProcess:
    """A collector with one token per identity in IDENTITIES (token files 0600 in workdir)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tokens = workdir / "tokens.yaml" if with_tokens else None
    server = CollectorProcess(workdir=workdir, db=workdir / "pool.sqlite", tokens=tokens)
    if tokens is not None:
        for identity in IDENTITIES:
            token_file = workdir / f"{identity.split('@')[0]}.token"
            write_token_file(token_file, add_token(tokens, identity))
            server.token_files[identity] = token_file
    return server
