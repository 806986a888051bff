"""Value types and small models shared by the factory and frontend configurations.

Every validator raises a `PydanticCustomError` whose message already reads as the
expectation ("must be an integer >= 0, got \"ten\""); `gwms.config.loader` adds the
file, line and field path in front of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import classad2
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError


def shown(value: Any) -> str:
    """How a wrong value is quoted back in a message: YAML-ish, strings in double quotes."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _fail(expectation: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError(
        "gwms_value", "{expectation}, got {got}", {"expectation": expectation, "got": shown(value)}
    )


class ConfigModel(BaseModel):
    """Base for every configuration model: an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# --- numbers ---------------------------------------------------------------------------------


def _as_int(value: Any, expectation: str) -> int:
    if isinstance(value, bool):
        raise _fail(expectation, value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
        return int(value)
    raise _fail(expectation, value)


def at_least(minimum: int) -> Callable[[Any], int]:
    """A validator whose error says the bound: `must be an integer >= 0, got "ten"`."""
    expectation = f"must be an integer >= {minimum}"

    def check(value: Any) -> int:
        number = _as_int(value, expectation)
        if number < minimum:
            raise _fail(expectation, value)
        return number

    return check


NonNegativeInt = Annotated[int, BeforeValidator(at_least(0))]
PositiveInt = Annotated[int, BeforeValidator(at_least(1))]


def _positive_float(value: Any) -> float:
    expectation = "must be a number > 0"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _fail(expectation, value)
    try:
        number = float(value)
    except ValueError:
        raise _fail(expectation, value) from None
    if not number > 0 or number == float("inf"):
        raise _fail(expectation, value)
    return number


PositiveFloat = Annotated[float, BeforeValidator(_positive_float)]


# --- durations and sizes ---------------------------------------------------------------------

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw])")


def parse_duration(value: Any) -> int:
    """Seconds from `90`, `"90s"`, `"15m"`, `"2h"`, `"1d"` or `"1h30m"`; positive, whole seconds."""
    expectation = 'must be a duration such as 90, "90s", "15m", "2h" or "1h30m"'
    if isinstance(value, bool):
        raise _fail(expectation, value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
            seconds = float(text)
        elif text and _DURATION_PART.sub("", text) == "":
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise _fail(expectation, value)
    else:
        raise _fail(expectation, value)
    if seconds < 1 or seconds != int(seconds):
        raise _fail(f"{expectation}, of at least 1 second in whole seconds", value)
    return int(seconds)


Duration = Annotated[int, BeforeValidator(parse_duration)]
"""A positive number of seconds; YAML may write it as a number or with units."""

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(value: Any) -> int:
    """Bytes from `1048576`, `"512KiB"`, `"50MB"` or `"1GiB"`; positive."""
    expectation = 'must be a size such as 1048576, "512KiB", "50MB" or "1GiB"'
    if isinstance(value, bool):
        raise _fail(expectation, value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise _fail(expectation, value)
        number = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    else:
        raise _fail(expectation, value)
    if number < 1:
        raise _fail(expectation, value)
    return number


ByteSize = Annotated[int, BeforeValidator(parse_size)]


# --- names, addresses, paths -----------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _name(value: Any) -> str:
    expectation = (
        "must be a name of letters, digits, '_' and '-' (at most 64, starting with a letter or"
        " digit)"
    )
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _fail(expectation, value)
    return value


Name = Annotated[str, BeforeValidator(_name)]
"""A name that ends up in ads, client names (`frontend.group`) and directory names."""


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail("must be a non-empty string", value)
    return value


Text = Annotated[str, BeforeValidator(_text)]


def _host_port(value: Any) -> str:
    expectation = 'must be "host:port" with a port from 1 to 65535 (e.g. "127.0.0.1:9618")'
    if not isinstance(value, str):
        raise _fail(expectation, value)
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})", value.strip())
    if not match or not 1 <= int(match.group(2)) <= 65535:
        raise _fail(expectation, value)
    return value.strip()


HostPort = Annotated[str, BeforeValidator(_host_port)]


def _http_url(value: Any) -> str:
    expectation = 'must be an http:// or https:// URL with a host (e.g. "http://127.0.0.1:8319")'
    if not isinstance(value, str):
        raise _fail(expectation, value)
    match = re.fullmatch(r"(https?)://([^/?#\s]+)([^\s]*)", value.strip())
    if not match or match.group(2).startswith(":"):
        raise _fail(expectation, value)
    return value.strip().rstrip("/")


HttpUrl = Annotated[str, BeforeValidator(_http_url)]
"""An http(s) URL, kept as text without a trailing slash."""


def _path_text(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise _fail("must be a file or directory path", value)
    return value


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken from the configuration file's directory, not the cwd."""
    path = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


ConfigPath = Annotated[Path, BeforeValidator(_path_text), AfterValidator(_resolve_path)]


# --- ClassAds ----------------------------------------------------------------------------------

_ATTR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _classad_expr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise _fail("must be a ClassAd expression (e.g. 'TARGET.Memory >= 2048')", value)
    try:
        classad2.ExprTree(value)
    except Exception:
        raise PydanticCustomError(
            "gwms_classad",
            "is not a valid ClassAd expression: {got}; check parentheses, quotes and operators"
            " (e.g. 'RequestMemory <= 2048 && Arch == \"X86_64\"')",
            {"got": shown(value)},
        ) from None
    return value.strip()


ClassAdExpr = Annotated[str, BeforeValidator(_classad_expr)]
"""A ClassAd expression, checked by parsing it with `classad2.ExprTree`."""


def _attr_name(value: Any) -> str:
    if not isinstance(value, str) or not _ATTR_NAME.fullmatch(value):
        raise _fail(
            "must be a ClassAd attribute name (letters, digits and '_', not starting with a digit)",
            value,
        )
    return value


AttrName = Annotated[str, BeforeValidator(_attr_name)]


def _attr_value(value: Any) -> Any:
    if not isinstance(value, str | bool | int | float):
        raise _fail("must be text, a number or true/false", value)
    return value


AttrValue = Annotated[str | bool | int | float, BeforeValidator(_attr_value)]
"""A ClassAd attribute value written in YAML; the YAML type is kept (2 stays an integer)."""


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _level(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in _LEVELS:
        raise _fail(f"must be one of {', '.join(_LEVELS)}", value)
    return value.upper()


LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_level)]


# --- shared models -----------------------------------------------------------------------------


class TokenBucket(ConfigModel):
    """A rate limit: `capacity` calls at once, refilled at `refill_per_second`."""

    capacity: PositiveInt = Field(description="tokens the bucket holds (the burst size)")
    refill_per_second: PositiveFloat = Field(description="tokens added back per second")


class Retries(ConfigModel):
    """How a failed cloud call is retried: exponential backoff, capped."""

    attempts: PositiveInt = Field(5, description="tries per call, the first one included")
    initial_backoff: Duration = Field(1, description="wait before the second try")
    max_backoff: Duration = Field(60, description="longest wait between tries")
    multiplier: PositiveFloat = Field(2.0, description="each wait is the previous one times this")


class EmbeddedCollector(ConfigModel):
    """The embedded collector (`gwms collector serve`), reached over HTTP with a bearer token."""

    backend: Literal["embedded"]
    url: HttpUrl = Field(description="base URL of the embedded collector")
    token_file: ConfigPath = Field(description="file holding the bearer token (0600)")


class HTCondorCollector(ConfigModel):
    """An HTCondor collector, reached with the `htcondor2` bindings."""

    backend: Literal["htcondor"]
    address: HostPort = Field(description='collector "host:port"')


CollectorRef = Annotated[EmbeddedCollector | HTCondorCollector, Field(discriminator="backend")]


def _strict_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail("must be true or false", value)
    return value


Bool = Annotated[bool, BeforeValidator(_strict_bool)]
"""Only YAML `true`/`false`: `"yes"` or `1` are rejected, not guessed."""


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise _fail("must be a single value (text or number)", value)


Arg = Annotated[str, BeforeValidator(_scalar_text)]
"""A command-line argument: numbers written without quotes are taken as their text."""
