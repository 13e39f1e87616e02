"""Structured logging: one event per line as ``key=value`` pairs, easy to grep and to parse.

`kv` formats an event (its value formatting is the gateway's own); `EventLog` logs it and
hands its fields to the record, so ``--log-format json`` writes them as JSON values. The
line format, the escaping that keeps what a device or the headend sends from forging a
line (control characters as ``\\n``, ``\\x00``, ``\\u2028``; a traceback as the quoted
``exc=`` of its record's line) and the handler are `vpp_protocol.logfmt`'s, shared with
the headend.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import IO

from vpp_protocol.logfmt import Format, escape_controls, event_extra
from vpp_protocol.logfmt import configure as _configure

LOGGER_NAME = "vpp_gateway"


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
            self._log.debug(kv(event, **fields), extra=event_extra(event, fields))

    def info(self, event: str, **fields: object) -> None:
        if self._log.isEnabledFor(logging.INFO):
            self._log.info(kv(event, **fields), extra=event_extra(event, fields))

    def warning(self, event: str, **fields: object) -> None:
        self._log.warning(kv(event, **fields), extra=event_extra(event, fields))

    def error(self, event: str, **fields: object) -> None:
        self._log.error(kv(event, **fields), extra=event_extra(event, fields))


def configure(level: str = "info", stream: IO[str] | None = None, fmt: Format = "text") -> None:
    """Every log record of the process (the gateway's, grpclib's) as ``fmt`` lines on
    ``stream`` (stderr) from ``level``; called by the CLI only. The same as
    ``vpp_protocol.logfmt.configure(level, fmt, stream)``, which the CLI may call directly.
    """
    gateway = logging.getLogger(LOGGER_NAME)
    gateway.handlers.clear()
    gateway.propagate = True
    gateway.setLevel(logging.NOTSET)
    _configure(level, fmt, stream)


__all__ = ["LOGGER_NAME", "EventLog", "configure", "escape_controls", "kv"]
