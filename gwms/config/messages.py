"""Turn pydantic validation errors into operator messages: the line, the field path as written
in the file (union tags dropped), and the expectation with the value found.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from inspect import isclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Tag
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from gwms.config.common import shown
from gwms.config.issues import ConfigIssue, Loc, field_path
from gwms.config.refs import suggestion
from gwms.config.yamlsource import YamlSource

_TAG_FIELDS = ("type", "backend")


@dataclass
class _Located:
    """Where a pydantic `loc` lands in the file's data, and the model types met on the way."""

    data_loc: Loc
    missing: str | None = None
    parent_model: type[BaseModel] | None = None
    field: FieldInfo | None = None
    union_tags: tuple[str, ...] = ()


def _strip(tp: Any) -> Any:
    """Remove Annotated[...] and Optional[...] wrappers."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _union_members(tp: Any) -> dict[str, Any]:
    """The tag of each member of a discriminated union (a `Tag` or a literal `type`/`backend`)."""
    members: dict[str, Any] = {}
    for member in get_args(tp):
        tag = None
        if get_origin(member) is Annotated:
            tag = next((m.tag for m in get_args(member)[1:] if isinstance(m, Tag)), None)
        inner = _strip(member)
        if tag is None and isclass(inner) and issubclass(inner, BaseModel):
            for name in _TAG_FIELDS:
                info = inner.model_fields.get(name)
                if info is not None and get_origin(info.annotation) is Literal:
                    tag = get_args(info.annotation)[0]
                    break
        if tag is not None:
            members[str(tag)] = member
    return members


def _is_model(tp: Any) -> bool:
    return isclass(tp) and issubclass(tp, BaseModel)


def _locate(data: Any, model: type[BaseModel], loc: Loc) -> _Located:
    """Walk `loc` through the data and the model types together."""
    found = _Located(data_loc=())
    current: Any = data
    tp: Any = model
    path: list[str | int] = []
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        bare = _strip(tp) if tp is not None else None
        if get_origin(bare) in (Union, types.UnionType):
            members = _union_members(bare)
            if str(part) in members:
                tp = members[str(part)]
                continue
            bare = None
        next_tp = None
        if _is_model(bare):
            found.parent_model = bare
            info = bare.model_fields.get(str(part))
            found.field = info
            next_tp = info.annotation if info is not None else None
        elif get_origin(bare) is list and isinstance(part, int):
            next_tp = get_args(bare)[0]
        elif get_origin(bare) is dict:
            next_tp = get_args(bare)[1]
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            current = current[part]
            path.append(part)
        elif last and isinstance(current, dict) and isinstance(part, str):
            found.missing = part
        tp = next_tp
    found.data_loc = tuple(path)
    if _is_union(tp):
        found.union_tags = tuple(_union_members(_strip(tp)))
    return found


def _is_union(tp: Any) -> bool:
    return tp is not None and get_origin(_strip(tp)) in (Union, types.UnionType)


def _quoted_list(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


_SIMPLE = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
}


def _missing(error: ErrorDetails, where: _Located) -> tuple[Loc, str]:
    field = where.field
    about = f" ({field.description})" if field is not None and field.description else ""
    return (*where.data_loc, where.missing or "?"), f"is required but missing; add it{about}"


def _extra(error: ErrorDetails, where: _Located) -> tuple[Loc, str]:
    loc = where.data_loc
    allowed = list(where.parent_model.model_fields) if where.parent_model else []
    hint = suggestion(str(loc[-1]), allowed) if loc else ""
    if hint:
        return loc, f"unknown key{hint}"
    return loc, f"unknown key; the keys allowed here are {', '.join(allowed)}"


def _bad_tag(error: ErrorDetails, where: _Located) -> tuple[Loc, str]:
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    key = str(ctx.get("discriminator", "type")).strip("'")
    tags = _quoted_list(str(ctx.get("expected_tags", "")))
    tag = str(ctx.get("tag"))
    message = f"must be one of {', '.join(tags)}, got {shown(tag)}{suggestion(tag, tags)}"
    return (*where.data_loc, key), message


def _no_tag(error: ErrorDetails, where: _Located) -> tuple[Loc, str]:
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    key = str(ctx.get("discriminator", "type")).strip("'")
    choices = ", ".join(where.union_tags)
    value = error.get("input")
    if isinstance(value, dict):
        return (*where.data_loc, key), f"is required but missing; add it (one of {choices})"
    return where.data_loc, f"must be a mapping with {key}: one of {choices}, got {shown(value)}"


def _literal(error: ErrorDetails, where: _Located) -> tuple[Loc, str]:
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    choices = _quoted_list(str(ctx.get("expected", "")))
    value = error.get("input")
    hint = suggestion(value, choices) if isinstance(value, str) else ""
    return where.data_loc, f"must be one of {', '.join(choices)}, got {shown(value)}{hint}"


def _length(error: ErrorDetails, where: _Located) -> tuple[Loc, str]:
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    too_short = error["type"] == "too_short"
    bound = ctx.get("min_length" if too_short else "max_length")
    word = "at least" if too_short else "at most"
    noun = "item" if bound == 1 else "items"
    return where.data_loc, f"must have {word} {bound} {noun}, got {ctx.get('actual_length')}"


_HANDLERS = {
    "missing": _missing,
    "extra_forbidden": _extra,
    "union_tag_invalid": _bad_tag,
    "union_tag_not_found": _no_tag,
    "literal_error": _literal,
    "too_short": _length,
    "too_long": _length,
}


def _describe(error: ErrorDetails, where: _Located) -> tuple[Loc, str]:
    """The field path to show and the message for one pydantic error."""
    kind = error["type"]
    if kind in _HANDLERS:
        return _HANDLERS[kind](error, where)
    if kind.startswith("gwms_"):
        return where.data_loc, error["msg"]
    got = shown(error.get("input"))
    if kind in _SIMPLE:
        return where.data_loc, f"{_SIMPLE[kind]}, got {got}"
    message = error["msg"]
    return where.data_loc, f"{message[:1].lower()}{message[1:]}, got {got}"


def issues_from_errors(
    errors: list[ErrorDetails], source: YamlSource, model: type[BaseModel]
) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error, with the line the field (or its parent) is on."""
    issues: list[ConfigIssue] = []
    for error in errors:
        where = _locate(source.data, model, tuple(error["loc"]))
        loc, message = _describe(error, where)
        mark = source.mark_for(loc)
        issue = ConfigIssue(
            source.path,
            mark.line if mark else None,
            field_path(loc),
            message,
            mark.column if mark else None,
        )
        if issue not in issues:
            issues.append(issue)
    return issues
