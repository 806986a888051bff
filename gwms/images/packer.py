"""A thin wrapper around the `packer` CLI: argv in, `-machine-readable` lines out as events.

Ours because python-packer is unmaintained and broken on Python 3.11 and Packer 1.6.
Machine-readable lines are `timestamp,target,type,data...`; commas inside data are
written `%!(PACKER_COMMA)` and newlines `\\n`. Artifacts are announced as
`target,artifact,N,<field>,<value...>` lines, which `collect_artifacts` folds together.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gwms.errors import GwmsError


class PackerError(GwmsError):
    """Packer is missing, or a validate or build failed."""


@dataclass(frozen=True)
class PackerEvent:
    """One machine-readable line: `kind` is Packer's type (ui, artifact, error-count, ...)."""

    timestamp: int
    target: str
    kind: str
    data: tuple[str, ...]

    @property
    def message(self) -> str:
        """The human text of a `ui` event (say/message/error), else the data joined."""
        if self.kind == "ui" and len(self.data) >= 2:
            return self.data[1]
        return ",".join(self.data)

    @property
    def is_error(self) -> bool:
        return (self.kind == "ui" and self.data[:1] == ("error",)) or self.kind == "error"


@dataclass
class Artifact:
    """What one build produced: Packer's id (AMI `region:ami-...`, Glance id, ...) and files."""

    build: str
    builder_id: str = ""
    id: str = ""
    description: str = ""
    files: list[str] = field(default_factory=list)


@dataclass
class PackerRun:
    """A finished Packer command: exit code, every event, the artifacts and error texts."""

    returncode: int
    events: list[PackerEvent]

    @property
    def artifacts(self) -> list[Artifact]:
        return collect_artifacts(self.events)

    @property
    def errors(self) -> list[str]:
        return [e.message.strip() for e in self.events if e.is_error and e.message.strip()]

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def unescape(value: str) -> str:
    """Undo Packer's machine-readable escaping of commas, newlines and carriage returns."""
    return value.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_line(line: str) -> PackerEvent | None:
    """The event on one machine-readable line, or None for anything else (plugin noise)."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return PackerEvent(
        timestamp=int(parts[0]),
        target=parts[1],
        kind=parts[2],
        data=tuple(unescape(p) for p in parts[3:]),
    )


def collect_artifacts(events: Iterable[PackerEvent]) -> list[Artifact]:
    """Fold `artifact` events (one line per field) into one `Artifact` per build and index."""
    found: dict[tuple[str, str], Artifact] = {}
    for event in events:
        if event.kind != "artifact" or len(event.data) < 2:
            continue
        index, key, rest = event.data[0], event.data[1], event.data[2:]
        artifact = found.setdefault((event.target, index), Artifact(build=event.target))
        value = ",".join(rest)
        if key == "builder-id":
            artifact.builder_id = value
        elif key == "id":
            artifact.id = value
        elif key == "string":
            artifact.description = value
        elif key == "file" and len(rest) >= 2:
            artifact.files.append(",".join(rest[1:]))
    return list(found.values())


@dataclass
class Packer:
    """The `packer` executable and how to call it; `env` adds to the inherited environment."""

    binary: str = "packer"
    env: Mapping[str, str] = field(default_factory=dict)

    def path(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise PackerError(
                f"packer not found (looked for {self.binary!r} on PATH);"
                " install it (Debian: apt-get install packer) or pass --packer PATH"
            )
        return found

    def version(self) -> str:
        """Packer's version as `1.6.6` (from `packer version -machine-readable`)."""
        run = self.run(["version"])
        for event in run.events:
            if event.kind == "version" and event.data:
                return event.data[0]
        match = re.search(r"v?(\d+\.\d+\.\d+)", " ".join(e.message for e in run.events))
        if match is None:
            raise PackerError(f"could not read the version of {self.path()}; run `packer version`")
        return match.group(1)

    def validate(
        self,
        template: Path,
        *,
        var_files: Sequence[Path] = (),
        variables: Mapping[str, str] | None = None,
        only: Sequence[str] = (),
        cwd: Path | None = None,
    ) -> PackerRun:
        return self.run(
            ["validate", *_template_args(var_files, variables, only), str(template)], cwd=cwd
        )

    def build(
        self,
        template: Path,
        *,
        var_files: Sequence[Path] = (),
        variables: Mapping[str, str] | None = None,
        only: Sequence[str] = (),
        force: bool = False,
        on_event: Callable[[PackerEvent], None] | None = None,
        cwd: Path | None = None,
    ) -> PackerRun:
        argv = ["build", "-color=false", "-on-error=cleanup"]
        if force:
            argv.append("-force")
        argv += [*_template_args(var_files, variables, only), str(template)]
        return self.run(argv, on_event=on_event, cwd=cwd)

    def run(
        self,
        argv: Sequence[str],
        *,
        on_event: Callable[[PackerEvent], None] | None = None,
        cwd: Path | None = None,
    ) -> PackerRun:
        """Run `packer -machine-readable ARGV`, streaming events; Ctrl-C stops Packer cleanly."""
        command = [self.path(), argv[0], "-machine-readable", *argv[1:]]
        env = {**os.environ, "CHECKPOINT_DISABLE": "1", "PACKER_NO_COLOR": "1", **self.env}
        events: list[PackerEvent] = []
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = parse_line(line)
                if event is None:
                    continue
                events.append(event)
                if on_event is not None:
                    on_event(event)
            returncode = proc.wait()
        except BaseException:
            _stop(proc)
            raise
        return PackerRun(returncode=returncode, events=events)


def _template_args(
    var_files: Sequence[Path], variables: Mapping[str, str] | None, only: Sequence[str]
) -> list[str]:
    args = [f"-var-file={path}" for path in var_files]
    args += [f"-var={key}={value}" for key, value in (variables or {}).items()]
    if only:
        args.append(f"-only={','.join(only)}")
    return args


def _stop(proc: subprocess.Popen[str]) -> None:
    """Interrupt Packer (it then cleans up its VM), and kill it if it does not stop."""
    if proc.poll() is not None:
        return
    # The whole group: Packer 1.6 re-executes itself (panicwrap) and only the child acts on it.
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
