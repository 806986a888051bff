"""Logging for the VM side: one stderr line per message, `gwms-bootstrap[PID]: level: text`.

The bootstrap runs as a systemd service whose stderr goes to the journal (and often to the
serial console too). When stderr *is* the journal stream (systemd sets JOURNAL_STREAM), each
line also starts with a `<N>` syslog priority so journald records the right level. Multi-line
messages (tracebacks) are split so every line carries the prefix. Stdlib only, Python 3.6.
"""

import logging
import os
import sys
from typing import IO, Optional

IDENT = "gwms-bootstrap"
ROOT_LOGGER = "gwms_context"

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def get_logger(component: str) -> logging.Logger:
    """Logger of one VM-side component, below the one `setup()` configures."""
    return logging.getLogger(ROOT_LOGGER + "." + component)


def stream_is_journal(stream: IO) -> bool:
    """True when `stream` is the journald stream systemd connected (JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":", 1))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


class LineFormatter(logging.Formatter):
    """`<N>ident[pid]: level: message`, prefix on every line, `<N>` only for the journal."""

    def __init__(self, ident: str = IDENT, syslog_priority: bool = False) -> None:
        super().__init__()
        self.ident = ident
        self.syslog_priority = syslog_priority

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head = "%s[%d]: %s: " % (self.ident, os.getpid(), record.levelname.lower())
        if self.syslog_priority:
            head = "<%d>%s" % (_SYSLOG_PRIORITY.get(record.levelno, 6), head)
        return "\n".join(head + line for line in (text.splitlines() or [""]))


class _StderrHandler(logging.StreamHandler):
    """Writes to the *current* sys.stderr unless given a stream (so redirections still work)."""

    def __init__(self, stream: Optional[IO] = None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream is not None

    def emit(self, record: logging.LogRecord) -> None:
        if not self._fixed:
            self.stream = sys.stderr
        super().emit(record)


def setup(verbosity: int = 0, stream: Optional[IO] = None, ident: str = IDENT) -> logging.Logger:
    """Configure VM-side logging; 0 = warnings and errors, 1 = info, 2+ = debug. Idempotent."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger(ROOT_LOGGER)
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    handler = _StderrHandler(stream)
    handler.setFormatter(LineFormatter(ident, stream_is_journal(stream or sys.stderr)))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
