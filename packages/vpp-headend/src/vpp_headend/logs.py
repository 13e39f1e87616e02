"""Structured logs: one event per line as ``event=NAME key=value ...``.

`log_event` formats the message; `configure_logging` (called by the CLI only) sets a
plain formatter with a UTC timestamp in front.

Log lines cannot be forged: every control character (C0 with NUL and TAB, DEL, C1 with
U+0085, format characters such as bidi overrides, U+2028/U+2029) is written as an
escape (``\\n``, ``\\r``, ``\\x00``, ``\\u2028``), at two depths. `kv` escapes the values
it formats; and because not every line goes through `kv` (uvicorn's own lines, other
libraries, ``%s`` messages, exception texts), the formatter of `configure_logging`
escapes the whole formatted record too. A record's message is always one line. A
traceback (or stack) is kept readable on continuation lines that each start with
``  | ``, escaped the same way: a line that starts with a timestamp is always a record
of its own, never text a peer sent.
"""

from __future__ import annotations

import logging
import sys
import time
import unicodedata
from typing import IO, Any

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@+,[]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Cc: C0, DEL and C1 controls (NUL, CR, LF, U+0085); Cf: format (bidi overrides, zero
# width); Zl/Zp: U+2028/U+2029, which some viewers break lines on.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
#: Starts every continuation line (traceback, stack) of a formatted record.
CONTINUATION = "  | "


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


def _value(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, list | tuple | set | frozenset):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    if text and all(c in _SAFE for c in text):
        return text
    escaped = escape_controls(text.replace("\\", "\\\\").replace('"', '\\"'))
    return f'"{escaped}"'


def kv(event: str, **fields: Any) -> str:
    """``event=NAME k=v ...`` with values quoted when they contain spaces or quotes."""
    parts = [f"event={event}"]
    parts += [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log one structured event line."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", kv(event, **fields))


class EscapingFormatter(logging.Formatter):
    """A `logging.Formatter` whose output has no control character but its own line breaks.

    The record (time, level, logger name, message) is one line, escaped whole; exception
    and stack texts follow on `CONTINUATION` lines. ``record.exc_text`` is left unset, so
    other handlers format the exception their own way.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        lines = [escape_controls(self.formatMessage(record))]
        extra: list[str] = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        elif record.exc_text:
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        lines += [
            CONTINUATION + escape_controls(line) for text in extra for line in text.split("\n")
        ]
        return "\n".join(lines)


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Root logging for the CLI: ``2026-11-27T10:00:00Z INFO vpp_headend.x event=...``
    on ``stream`` (stderr). Every logger propagates here, uvicorn's included (the server
    is started with ``log_config=None``), so every line passes `EscapingFormatter`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter = EscapingFormatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


__all__ = [
    "CONTINUATION",
    "EscapingFormatter",
    "configure_logging",
    "escape_controls",
    "kv",
    "log_event",
]
