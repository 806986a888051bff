"""Cross-reference checks shared by the factory and frontend models: unique names, names that
resolve, globs that match something; each finding is a `Problem` placed on a line later.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence

from pydantic_core import PydanticCustomError

from gwms.config.issues import Loc, Problem, field_path


def suggestion(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean "x"?)` for a near miss, else the empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _known(kind: str, names: Sequence[str]) -> str:
    names = list(dict.fromkeys(names))
    if not names:
        return f"no {kind} is defined"
    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f"defined: {listed}"


def duplicates(kind: str, list_loc: Loc, names: Sequence[str], key: str = "name") -> list[Problem]:
    """A Problem on every repeat of a name, pointing back at its first use."""
    first: dict[str, int] = {}
    found = []
    for index, name in enumerate(names):
        if name in first:
            found.append(
                Problem(
                    (*list_loc, index, key),
                    f'"{name}" is already used by {{other}}; each {kind} needs its own {key}',
                    other=(*list_loc, first[name], key),
                )
            )
        else:
            first[name] = index
    return found


def dangling(loc: Loc, kind: str, value: str, names: Sequence[str]) -> Problem:
    """A reference to a name that is not defined, with the defined ones and a near miss."""
    return Problem(
        loc,
        f'refers to {kind} "{value}", which is not defined; {_known(kind, names)}'
        f"{suggestion(value, names)}",
    )


def check_patterns(
    loc: Loc, patterns: Sequence[str], names: Sequence[str], kind: str
) -> list[Problem]:
    """Each name or glob in `patterns` must match at least one of `names`."""
    found = []
    for index, pattern in enumerate(patterns):
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            found.append(
                Problem(
                    (*loc, index),
                    f'"{pattern}" matches no {kind}; {_known(kind, names)}'
                    f"{suggestion(pattern, names)}",
                )
            )
    return found


def render(problem: Problem) -> str:
    """A Problem as text without line numbers, for models built in code rather than loaded."""
    message = problem.message.replace("{other}", field_path(problem.other) if problem.other else "")
    return f"{field_path(problem.loc)}: {message}"


def raise_problems(problems: Sequence[Problem]) -> None:
    """Fail validation of a model built in code (the file loader places problems on lines)."""
    if problems:
        raise PydanticCustomError(
            "gwms_problems", "{details}", {"details": "; ".join(render(p) for p in problems)}
        )
