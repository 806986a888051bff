"""Load a configuration file into a validated model, or raise ConfigFileError listing every
problem with its file, line, field path and expectation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from gwms.config.factory import FactoryConfig
from gwms.config.frontend import FrontendConfig
from gwms.config.issues import ConfigFileError, ConfigIssue, Problem, field_path
from gwms.config.messages import issues_from_errors
from gwms.config.yamlsource import YamlProblem, YamlSource, read_yaml

ModelT = TypeVar("ModelT", FactoryConfig, FrontendConfig)

_KIND = {FactoryConfig: "factory", FrontendConfig: "frontend"}
# Keys only the other kind of file has: a frontend file passed to the factory, or back.
_TELLTALE = {"factory": {"groups", "schedds", "credentials"}, "frontend": {"entries", "clouds"}}


def _fail(path: Path, message: str, line: int | None = None, field: str = "") -> ConfigFileError:
    return ConfigFileError([ConfigIssue(path, line, field, message)])


def _read_text(path: Path, kind: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(
            path, f"no such file; check the path, or start from docs/examples/{kind}.yaml"
        ) from None
    except IsADirectoryError:
        raise _fail(path, "is a directory; pass the configuration file itself") from None
    except PermissionError:
        raise _fail(path, "cannot be read (permission denied); check its owner and mode") from None
    except UnicodeDecodeError as exc:
        raise _fail(
            path, f"is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
        ) from None


def _parse(path: Path, kind: str) -> YamlSource:
    text = _read_text(path, kind)
    try:
        source = read_yaml(path, text)
    except YamlProblem as problem:
        line = problem.mark.line if problem.mark else None
        raise _fail(path, problem.message, line, field_path(problem.loc)) from None
    if source.data is None:
        raise _fail(path, f"is empty; write the {kind} settings (see docs/examples/{kind}.yaml)")
    if not isinstance(source.data, dict):
        raise _fail(path, "must be a mapping of settings at the top level", 1)
    other = "frontend" if kind == "factory" else "factory"
    if source.data.keys() & _TELLTALE[kind] and not source.data.keys() & _TELLTALE[other]:
        raise _fail(
            path,
            f"looks like a {other} configuration; check it with `gwms {other} check-config`",
        )
    return source


def _placed(source: YamlSource, problem: Problem) -> ConfigIssue:
    mark = source.mark_for(problem.loc)
    message = problem.message
    if problem.other is not None:
        other_mark = source.mark_for(problem.other)
        other = field_path(problem.other)
        message = message.replace(
            "{other}", f"{other} (line {other_mark.line})" if other_mark else other
        )
    return ConfigIssue(
        source.path,
        mark.line if mark else None,
        field_path(problem.loc),
        message,
        mark.column if mark else None,
    )


def load_config(path: str | Path, model: type[ModelT]) -> ModelT:
    """Read, parse and validate `path` as `model`; relative paths inside are from its directory."""
    path = Path(path)
    kind = _KIND[model]
    source = _parse(path, kind)
    context = {"base_dir": path.resolve().parent, "defer_problems": True}
    try:
        config = model.model_validate(source.data, context=context)
    except ValidationError as exc:
        issues = issues_from_errors(exc.errors(), source, model)
        raise ConfigFileError(issues) from None
    problems = config.problems()
    if problems:
        issues = [_placed(source, problem) for problem in problems]
        raise ConfigFileError(issues)
    return config


def load_factory_config(path: str | Path) -> FactoryConfig:
    """The factory configuration in `path`, validated; raises ConfigFileError."""
    return load_config(path, FactoryConfig)


def load_frontend_config(path: str | Path) -> FrontendConfig:
    """The frontend configuration in `path`, validated; raises ConfigFileError."""
    return load_config(path, FrontendConfig)
