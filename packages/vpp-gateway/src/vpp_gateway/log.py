"""Structured logging: one event per line as ``key=value`` pairs, easy to grep and to parse.

Log lines cannot be forged by what a device or the headend sends: every control
character (C0 with NUL, CR, LF and TAB; DEL; C1 with U+0085; format characters such as
bidi overrides; U+2028/U+2029) is written as an escape (``\\n``, ``\\x00``, ``\\u2028``).
`kv` escapes the values it formats, and `KVFormatter` escapes the whole message again,
for lines that did not come through `kv`. A record is always one line: an exception's
traceback is the quoted, escaped value of ``exc=`` on that line (``\\n`` between its
lines).
"""

from __future__ import annotations

import logging
import math
import sys
import unicodedata
from datetime import datetime
from typing import IO

LOGGER_NAME = "vpp_gateway"

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Cc: C0, DEL and C1 controls; Cf: format (bidi overrides); Zl/Zp: U+2028/U+2029.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape; backslashes as they are."""
    if text.isprintable():  # the common case, checked in C
        return text
    out: list[str] = []
    for ch in text:
        if unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            code = ord(ch)
            ch = _SHORT_ESCAPES.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        out.append(ch)
    return "".join(out)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        text = f"{value:.3f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    text = str(value)
    if not text or any(c in text for c in ' ="\\') or not text.isprintable():
        return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    return text


def kv(event: str, **fields: object) -> str:
    """``event=<event> k=v ...``; fields whose value is None are left out."""
    parts = [f"event={event}"]
    parts += [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


class EventLog:
    """A thin wrapper over a stdlib logger that writes `kv` lines."""

    def __init__(self, name: str = LOGGER_NAME) -> None:
        self._log = logging.getLogger(name)

    def enabled(self, level: int) -> bool:
        return self._log.isEnabledFor(level)

    def debug(self, event: str, **fields: object) -> None:
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug(kv(event, **fields))

    def info(self, event: str, **fields: object) -> None:
        if self._log.isEnabledFor(logging.INFO):
            self._log.info(kv(event, **fields))

    def warning(self, event: str, **fields: object) -> None:
        self._log.warning(kv(event, **fields))

    def error(self, event: str, **fields: object) -> None:
        self._log.error(kv(event, **fields))


class KVFormatter(logging.Formatter):
    """``ts=... level=info <message>``: the message is already key=value."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        message = escape_controls(record.getMessage())
        line = f"ts={ts} level={record.levelname.lower()} {message}"
        if record.exc_info:
            line += " exc=" + _fmt(self.formatException(record.exc_info))
        if record.stack_info:
            line += " stack=" + _fmt(self.formatStack(record.stack_info))
        return line


def configure(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send the gateway's events to ``stream`` (stderr) at ``level``; called by the CLI only."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KVFormatter())
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
