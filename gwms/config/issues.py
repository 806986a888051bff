"""The error a bad configuration file raises: every problem, each with file, line and field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gwms.errors import ConfigError

Loc = tuple[str | int, ...]


def field_path(loc: Loc) -> str:
    """Render a location the way an operator writes it: `entries[2].limits.max_running`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: `file:line: field: what is wrong and what is expected`."""

    file: Path
    line: int | None
    field: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        if not self.field:
            return f"{where}: {self.message}"
        return f"{where}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Problem:
    """A cross-field problem found on a validated model, before it is placed on a line.

    `message` may contain `{other}`, replaced by the field path and line of `other`
    (e.g. the first definition of a duplicated name).
    """

    loc: Loc
    message: str
    other: Loc | None = None


class ConfigFileError(ConfigError):
    """A configuration file is invalid; `issues` lists every problem, sorted in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        if not issues:
            raise ValueError("ConfigFileError needs at least one issue")
        self.issues = tuple(sorted(issues, key=lambda i: (i.line or 0, i.column or 0)))
        summary = str(self.issues[0])
        rest = len(self.issues) - 1
        if rest:
            noun = "problem" if rest == 1 else "problems"
            summary += f" (and {rest} more {noun} below)"
        lines = [summary, *(f"  {issue}" for issue in self.issues[1:])]
        super().__init__("\n".join(lines))
