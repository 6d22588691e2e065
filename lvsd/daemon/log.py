"""Logging for the daemon: one line per event on stderr, made for the journal.

Under systemd (``$JOURNAL_STREAM`` names our stderr) each line starts with the syslog priority
prefix ``<N>`` that journald turns into the entry's priority and the journal adds the time;
in a terminal each line carries a UTC timestamp and the level instead.
"""

from __future__ import annotations

import logging
import os
import sys
import time

#: C0 controls and DEL shown escaped: a message carrying a terminal escape or a carriage return
#: (a hook's output, a check's reply) cannot rewrite or hide other lines of the log
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def one_line(msg: str) -> str:
    """A message as one log line: its lines joined by spaces, control characters escaped."""
    return " ".join(msg.splitlines()).translate(_CONTROLS)


_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = one_line(record.getMessage())
        return f"<{_PRIORITY.get(record.levelno, 6)}>{msg}"


class _TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = one_line(record.getMessage())
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{t}.{int(record.msecs):03d}Z {record.levelname.lower()} {msg}"


def _stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def setup_logging(level: str = "info") -> logging.Logger:
    """Configure the ``lvsd`` logger tree to write one line per record to stderr."""
    logger = logging.getLogger("lvsd")
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter() if _stderr_is_journal() else _TerminalFormatter())
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper(), logging.INFO))
    logger.propagate = False
    return logger
