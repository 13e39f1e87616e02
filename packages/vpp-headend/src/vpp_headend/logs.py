"""Structured logs: one event per line as ``event=NAME key=value ...``.

`log_event` formats the message; `configure_logging` (called by the CLI only) sets a
plain formatter with a UTC timestamp in front.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:/@+,[]")


def _value(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, list | tuple | set | frozenset):
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    if text and all(c in _SAFE for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
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


def configure_logging(level: str = "INFO") -> None:
    """Root logging for the CLI: ``2026-11-27T10:00:00Z INFO vpp_headend.x event=...``."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


__all__ = ["configure_logging", "kv", "log_event"]
