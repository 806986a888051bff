"""Helpers over `classad2`: strict parsing, the JSON wire form of ads, constraints and matching.

`classad2` is lenient (it ignores trailing text and skips ads it cannot parse), which is
wrong for input a user typed; everything here rejects what it cannot read, naming where.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import classad2

# classad2 alone evaluates HTCondor's library functions (stringListMember, split, ...) to
# ERROR; importing htcondor2 registers them. Every evaluation in gwms goes through here.
import htcondor2  # noqa: F401

from gwms.errors import GwmsError

# JSON values of the wire form: literals as JSON, everything else as {"expr": "<ClassAd text>"}.
JsonAd = dict[str, Any]

ATTR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT64 = (-(2**63), 2**63 - 1)
_SENTINEL = "gwms__expr"


class ClassAdError(GwmsError):
    """An ad, expression or ad file is malformed."""


def quote(text: str) -> str:
    """Return `text` as a ClassAd string literal, quotes and escapes included."""
    return classad2.quote(text)


def unquote(literal: str) -> str:
    """Return the Python string a ClassAd string literal stands for."""
    try:
        return classad2.unquote(literal)
    except classad2.ClassAdException as exc:
        raise ClassAdError(
            f'{literal!r} is not a ClassAd string literal; quote it with "".'
        ) from exc


def check_attr_name(name: object, where: str) -> str:
    """Return `name` if it is a valid ClassAd attribute name, else raise naming `where`."""
    if not isinstance(name, str) or not ATTR_NAME.match(name):
        raise ClassAdError(
            f"{where}: {name!r} is not a ClassAd attribute name; use letters, digits and _ "
            "(not starting with a digit)."
        )
    return name


def parse_expr(text: str, where: str = "expression") -> classad2.ExprTree:
    """Parse one ClassAd expression, rejecting empty input and trailing text `classad2` ignores."""
    if not isinstance(text, str) or not text.strip():
        raise ClassAdError(f"{where}: the expression is empty; write a ClassAd expression.")
    if not _is_utf8_encodable(text):
        raise ClassAdError(f"{where}: the expression must be valid Unicode (no lone surrogates).")
    # classad2 ignores text after a complete ad, so parse twice: the newlines end a trailing
    # // comment, and the parenthesised copy turns "1 junk" or "x]" into errors.
    plain = _parse_single(f"[{_SENTINEL} = \n{text}\n]")
    wrapped = _parse_single(f"[{_SENTINEL} = (\n{text}\n)]")
    if plain is None or wrapped is None:
        raise ClassAdError(f"{where}: cannot parse {_shorten(text)} as a ClassAd expression.")
    return plain


def _parse_single(text: str) -> classad2.ExprTree | None:
    try:
        holder = classad2.ClassAd(text)
    except classad2.ClassAdException:
        return None
    if list(holder.keys()) != [_SENTINEL]:
        return None
    return holder.lookup(_SENTINEL)


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def as_expr(constraint: str | classad2.ExprTree | bool | None, where: str) -> classad2.ExprTree:
    """Accept a constraint as text, an ExprTree, a bool or None (meaning true)."""
    if constraint is None or constraint is True:
        return parse_expr("true", where)
    if constraint is False:
        return parse_expr("false", where)
    if isinstance(constraint, classad2.ExprTree):
        return constraint
    return parse_expr(constraint, where)


def is_true(value: object) -> bool:
    """ClassAd truth as in HTCondor's EvalBool: true or a non-zero number; undefined is false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, classad2.Value):
        return value != 0
    return False


def eval_constraint(
    constraint: str | classad2.ExprTree | None,
    ad: classad2.ClassAd,
    target: classad2.ClassAd | None = None,
) -> bool:
    """True when `constraint` evaluates to true with MY = `ad` (and TARGET = `target`)."""
    expr = as_expr(constraint, "constraint")
    return is_true(expr.eval(scope=ad, target=target))


def requirement_holds(ad: classad2.ClassAd, attrs: Iterable[str], target: classad2.ClassAd) -> bool:
    """Evaluate the first of `attrs` that `ad` has (MY = `ad`, TARGET = `target`); none: False."""
    for attr in attrs:
        if attr in ad:
            return is_true(ad.lookup(attr).eval(scope=ad, target=target))
    return False


def symmetric_match(left: classad2.ClassAd, right: classad2.ClassAd) -> bool:
    """Two-way match: each ad's Requirements hold against the other (HTCondor matchmaking)."""
    return requirement_holds(left, ("Requirements",), right) and requirement_holds(
        right, ("Requirements",), left
    )


def job_matches_machine(job: classad2.ClassAd, machine: classad2.ClassAd) -> bool:
    """Job Requirements accept the machine, and machine START (else Requirements) the job."""
    return requirement_holds(job, ("Requirements",), machine) and requirement_holds(
        machine, ("START", "Requirements"), job
    )


def ad_to_json(ad: classad2.ClassAd) -> JsonAd:
    """Return the wire form of `ad`: JSON literals, `{"expr": text}` for anything else."""
    result: JsonAd = {}
    for key in ad.keys():  # noqa: SIM118 - ClassAd iteration is via keys() in classad2
        result[key] = _value_to_json(ad, key)
    return result


def _value_to_json(ad: classad2.ClassAd, key: str) -> Any:
    value = ad[key]
    if value is classad2.Value.Undefined:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int) and not isinstance(value, classad2.Value):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return {"expr": repr(ad.lookup(key))}


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_to_ad(data: Mapping[str, Any], where: str = "ad") -> classad2.ClassAd:
    """Build a ClassAd from its wire form, rejecting bad names, values and expressions."""
    if not isinstance(data, Mapping):
        raise ClassAdError(f"{where}: an ad must be a JSON object of attribute names to values.")
    ad = classad2.ClassAd()
    seen: set[str] = set()
    for name, value in data.items():
        check_attr_name(name, where)
        if name.lower() in seen:
            raise ClassAdError(
                f"{where}: attribute {name!r} appears twice (ClassAd names ignore case); keep one."
            )
        seen.add(name.lower())
        ad[name] = _json_to_value(value, f"{where}.{name}")
    return ad


def _json_to_value(value: Any, where: str) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ClassAdError(f"{where}: strings cannot hold NUL characters in a ClassAd.")
    if isinstance(value, str) and not _is_utf8_encodable(value):
        # classad2 crashes the process (SIGSEGV) on lone surrogates, which JSON can carry.
        raise ClassAdError(f"{where}: strings must be valid Unicode (no lone surrogates).")
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ClassAdError(f"{where}: {value} does not fit a 64-bit ClassAd integer.")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ClassAdError(f"{where}: {value} is not a finite number.")
        return value
    if value is None:
        return parse_expr("undefined", where)
    if isinstance(value, Mapping) and set(value) == {"expr"} and isinstance(value["expr"], str):
        return parse_expr(value["expr"], where)
    raise ClassAdError(
        f"{where}: a value must be a JSON string, number, boolean, null or "
        '{"expr": "<ClassAd expression>"}; write lists and nested ads as expressions.'
    )


def parse_old_ads(text: str, source: str = "<text>") -> list[classad2.ClassAd]:
    """Parse old-style ad text: `Attr = expr` lines, ads separated by blank lines, # comments."""
    ads: list[classad2.ClassAd] = []
    current: classad2.ClassAd | None = None
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            if current is not None:
                ads.append(current)
            current, seen = None, set()
            continue
        if line.startswith("#"):
            continue
        where = f"{source}:{number}"
        name, sep, expr_text = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ClassAdError(f"{where}: expected 'Attribute = expression', got {_shorten(line)}.")
        check_attr_name(name, where)
        if name.lower() in seen:
            raise ClassAdError(f"{where}: attribute {name!r} repeats within one ad; keep one.")
        seen.add(name.lower())
        if current is None:
            current = classad2.ClassAd()
        current[name] = parse_expr(expr_text, where)
    if current is not None:
        ads.append(current)
    return ads


def format_old_ads(ads: Iterable[classad2.ClassAd]) -> str:
    """Old-style text of `ads`, one blank line between them (what `parse_old_ads` reads)."""
    return "\n".join(ad.printOld() for ad in ads)


def project(ad: classad2.ClassAd, attrs: Iterable[str] | None) -> classad2.ClassAd:
    """A copy of `ad` with only `attrs` (those it defines); None keeps every attribute."""
    if attrs is None:
        return ad
    wanted = {attr.lower() for attr in attrs}
    result = classad2.ClassAd()
    for key in ad.keys():  # noqa: SIM118 - ClassAd iteration is via keys() in classad2
        if key.lower() in wanted:
            result[key] = ad.lookup(key)
    return result


def copy_ad(ad: classad2.ClassAd) -> classad2.ClassAd:
    """An independent copy of `ad` (expressions copied as trees, floats exact)."""
    result = classad2.ClassAd()
    for key in ad.keys():  # noqa: SIM118 - ClassAd iteration is via keys() in classad2
        result[key] = ad.lookup(key)
    return result


def get_str(ad: classad2.ClassAd, attr: str) -> str | None:
    """The attribute's value if it is a string literal, else None."""
    if attr not in ad:
        return None
    value = ad[attr]
    return value if isinstance(value, str) else None
