"""Structured logging: one event per line as ``key=value`` pairs, easy to grep and to parse."""

from __future__ import annotations

import logging
import math
import sys
from datetime import datetime
from typing import IO

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
    if not text or any(c in text for c in ' ="\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
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
        line = f"ts={ts} level={record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            line += " exc=" + _fmt(self.formatException(record.exc_info))
        return line


def configure(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send the gateway's events to ``stream`` (stderr) at ``level``; called by the CLI only."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KVFormatter())
    root = logging.getLogger(LOGGER_NAME)
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
