"""Structured frontend logs: every line names the frontend, group and entry it is about.

One line per record, ``<UTC time> <LEVEL> key=value ...: message``, so operators can grep
``entry=ce1@gfactory`` and tools can split on the first ``": "``. Secrets never reach a
line: the formatter masks PEM blocks, JWTs and sealed envelopes as a last line of defence
(code must not log them in the first place).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import IO, Any

LOGGER = "gwms.frontend"
FIELD_ORDER = ("frontend", "group", "factory", "entry", "schedd", "collector", "credential")
_FIELDS_ATTR = "gwms_fields"

_SECRETS = (
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]+)-----(?:.*?-----END \1-----|\s*[A-Za-z0-9+/=\s]{16,})", re.S
        ),
        "[PEM]",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[JWT]"),
    (re.compile(r"gwms-seal:\d+:[^\s\"',;]+"), "[sealed]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[token]"),
)
_NEEDS_QUOTES = re.compile(r"[\s\"=]")


class BoundLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger carrying key=value fields; `bind` returns a child with more fields."""

    def __init__(self, logger: logging.Logger, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(logger, dict(fields or {}))

    @property
    def fields(self) -> dict[str, Any]:
        return dict(self.extra or {})

    def bind(self, **fields: Any) -> BoundLogger:
        """A logger with these fields added (None values are left out)."""
        more = {k: v for k, v in fields.items() if v is not None}
        return BoundLogger(self.logger, {**self.fields, **more})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra[_FIELDS_ATTR] = {**self.fields, **extra.get(_FIELDS_ATTR, {})}
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str = LOGGER, **fields: Any) -> BoundLogger:
    """The frontend's logger with ``fields`` bound to every line."""
    return BoundLogger(logging.getLogger(name)).bind(**fields)


def redact(text: str) -> str:
    """Mask anything shaped like a secret (PEM, JWT, sealed envelope, bearer token)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _render(value: Any) -> str:
    text = str(value)
    return '"' + text.replace('"', '\\"') + '"' if _NEEDS_QUOTES.search(text) or not text else text


class KeyValueFormatter(logging.Formatter):
    """``2026-11-22T10:00:00Z INFO frontend=vo1 group=main entry=ce1@gf: message``."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS_ATTR, {}) or {}
        ordered = [k for k in FIELD_ORDER if k in fields] + sorted(
            k for k in fields if k not in FIELD_ORDER
        )
        head = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%SZ')} {record.levelname}"
        if ordered:
            head += " " + " ".join(f"{k}={_render(fields[k])}" for k in ordered)
        else:
            head += f" {record.name}"
        text = f"{head}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def setup_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Send every ``gwms`` logger's records to ``stream`` (stderr) in the key=value format."""
    root = logging.getLogger("gwms")
    for handler in list(root.handlers):
        if getattr(handler, "_gwms_frontend", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler._gwms_frontend = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
