"""OpenNebula: user data from context.sh on the context CD (label CONTEXT).

context.sh is a shell fragment of ``KEY='value'`` lines. It is parsed here, never sourced:
single quotes are literal (OpenNebula escapes a quote as ``'\\''``), so a value holding
``$(rm -rf /)`` comes back as those characters. Values that a shell *would* expand (``$`` or
backquotes outside single quotes) are refused rather than guessed. The user data is the
first non-empty of USER_DATA, USERDATA (base64 when USER_DATA_ENCODING / USERDATA_ENCODING
says so) and EC2_USER_DATA (always base64: OpenNebula's EC2 API and old glideinWMS images).
"""

import base64
import binascii
import os
import re
from typing import Optional, Tuple

from gwms_context.log import get_logger
from gwms_context.middleware.base import (
    CONFIDENT,
    Detection,
    FetchOptions,
    MiddlewareError,
    find_label,
    mounted_read_only,
    read_bytes,
)

NAME = "opennebula"
CD_LABELS = ("CONTEXT", "context")
CONTEXT_FILE = "context.sh"
# (variable, encoding variable or None when always base64)
USER_DATA_VARIABLES = (
    ("USER_DATA", "USER_DATA_ENCODING"),
    ("USERDATA", "USERDATA_ENCODING"),
    ("EC2_USER_DATA", None),
)

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPANDING = "$`"
_DOUBLE_QUOTE_ESCAPES = '$`"\\'

LOG = get_logger("opennebula")


class ContextVariables(dict):
    """Variables of one context.sh; `expanding` names those a shell would have expanded."""

    def __init__(self) -> None:
        super().__init__()
        self.expanding = set()  # type: set


def detect(root: str) -> Detection:
    cd = find_label(root, *CD_LABELS)
    if cd:
        return Detection(CONFIDENT, ["OpenNebula context CD %s" % cd])
    return Detection()


def fetch(opts: FetchOptions) -> Optional[bytes]:
    """User data from --config-drive DIR (holding context.sh), else the CONTEXT CD."""
    if opts.metadata_url:
        LOG.warning("--metadata-url is ignored by the opennebula middleware")
    if opts.config_drive:
        return user_data_from_context(*_read_context(opts.config_drive))
    device = find_label(opts.root, *CD_LABELS)
    if not device:
        raise MiddlewareError(
            "no OpenNebula context CD (label CONTEXT) under %s; attach the context CD or "
            "pass --config-drive DIR" % os.path.join(opts.root, "dev/disk/by-label")
        )
    with mounted_read_only(device, timeout=max(1.0, opts.deadline)) as mountpoint:
        return user_data_from_context(*_read_context(mountpoint))


def _read_context(directory: str) -> Tuple[ContextVariables, str]:
    path = os.path.join(directory, CONTEXT_FILE)
    if not os.path.exists(path):
        raise MiddlewareError(
            "%s has no %s, so it is not an OpenNebula context CD; pass the directory where "
            "the CONTEXT CD is mounted" % (directory, CONTEXT_FILE)
        )
    text = read_bytes(path, "OpenNebula context").decode("utf-8", "surrogateescape")
    return parse_context_sh(text, path), path


def user_data_from_context(
    variables: ContextVariables, where: str = CONTEXT_FILE
) -> Optional[bytes]:
    """The decoded user data of parsed context variables, or None when there is none."""
    for name, encoding_name in USER_DATA_VARIABLES:
        value = variables.get(name, "")
        if not value:
            continue
        if name in variables.expanding:
            raise MiddlewareError(
                "%s in %s uses shell expansion ($ or `) outside single quotes, which gwms never "
                "evaluates; put the value in single quotes" % (name, where)
            )
        encoding = "base64" if encoding_name is None else variables.get(encoding_name, "")
        if encoding.lower() == "base64":
            return _b64decode(value, name, where)
        if encoding:
            raise MiddlewareError(
                "%s in %s is %r, an encoding gwms does not know; use base64 or leave it unset"
                % (encoding_name, where, encoding)
            )
        return value.encode("utf-8", "surrogateescape")
    return None


def _b64decode(value: str, name: str, where: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MiddlewareError(
            "%s in %s should be base64 but is not; check how the VM template sets it"
            % (name, where)
        ) from None


def parse_context_sh(text: str, where: str = CONTEXT_FILE) -> ContextVariables:
    """Parse ``KEY='value'`` assignments the way sh would, without executing anything."""
    return _Parser(text, where).parse()


class _Parser(object):
    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.pos = 0
        self.line = 1

    def error(self, what: str) -> MiddlewareError:
        return MiddlewareError(
            "%s line %d column %d: %s; the context CD is damaged or not made by OpenNebula"
            % (self.where, self.line, self.column(), what)
        )

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def advance(self) -> str:
        char = self.text[self.pos]
        self.pos += 1
        if char == "\n":
            self.line += 1
        return char

    def parse(self) -> ContextVariables:
        variables = ContextVariables()
        while True:
            self.skip_blanks(newlines=True)
            char = self.peek()
            if not char:
                return variables
            if char == "#":
                self.skip_comment()
                continue
            name = self.name()
            if name == "export" and self.peek() in " \t":
                self.skip_blanks(newlines=False)
                name = self.name()
            if self.peek() != "=":
                raise self.error("expected KEY='value'")
            self.advance()
            value, expands = self.value()
            variables[name] = value
            if expands:
                variables.expanding.add(name)
            else:
                variables.expanding.discard(name)
            self.end_of_assignment(name)

    def name(self) -> str:
        match = _NAME_RE.match(self.text, self.pos)
        if not match:
            raise self.error("expected a variable name")
        self.pos = match.end()
        return match.group(0)

    def value(self) -> Tuple[str, bool]:
        parts = []
        expands = False
        while True:
            char = self.peek()
            if char in ("", " ", "\t", "\r", "\n", ";"):
                return "".join(parts), expands
            start = (self.pos, self.line)  # where an unclosed quote is reported
            self.advance()
            if char == "'":
                end = self.text.find("'", self.pos)
                if end < 0:
                    self.pos, self.line = start
                    raise self.error("a single quote is never closed")
                chunk = self.text[self.pos : end]
                self.line += chunk.count("\n")
                self.pos = end + 1
                parts.append(chunk)
            elif char == '"':
                chunk, chunk_expands = self.double_quoted(start)
                parts.append(chunk)
                expands = expands or chunk_expands
            elif char == "\\":
                if not self.peek():
                    raise self.error("the file ends after a backslash")
                escaped = self.advance()
                if escaped != "\n":  # backslash-newline continues the line
                    parts.append(escaped)
            else:
                expands = expands or char in _EXPANDING
                parts.append(char)

    def double_quoted(self, start: Tuple[int, int]) -> Tuple[str, bool]:
        parts = []
        expands = False
        while True:
            if not self.peek():
                self.pos, self.line = start
                raise self.error("a double quote is never closed")
            char = self.advance()
            if char == '"':
                return "".join(parts), expands
            if char == "\\" and self.peek() and self.peek() in _DOUBLE_QUOTE_ESCAPES + "\n":
                escaped = self.advance()
                if escaped != "\n":
                    parts.append(escaped)
                continue
            expands = expands or char in _EXPANDING
            parts.append(char)

    def end_of_assignment(self, name: str) -> None:
        self.skip_blanks(newlines=False)
        char = self.peek()
        if char == ";":
            self.advance()
        elif char == "#":
            self.skip_comment()
        elif char not in ("", "\n"):
            raise self.error("unexpected text after the value of %s" % name)

    def skip_blanks(self, newlines: bool) -> None:
        blanks = " \t\r\n" if newlines else " \t\r"
        while self.peek() and self.peek() in blanks:
            self.advance()

    def skip_comment(self) -> None:
        while self.peek() not in ("", "\n"):
            self.advance()

    def column(self) -> int:
        # Positions only: the text itself may be user data, which carries credentials.
        return self.pos - self.text.rfind("\n", 0, self.pos)
