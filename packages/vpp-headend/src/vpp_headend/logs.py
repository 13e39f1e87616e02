"""Structured logs: one event per line as ``event=NAME key=value ...``.

`log_event` formats the event (`kv`) and hands its fields to the record too, so the JSON
format (``--log-format json``) writes them as JSON values. The line format itself, the
escaping that keeps a peer from forging a line, and the handler the CLI installs are
`vpp_protocol.logfmt`'s: the headend, the gateway, uvicorn and Litestar share them.
"""

from __future__ import annotations

import logging
from typing import IO, Any

from vpp_protocol.logfmt import Format, configure, escape_controls, event_extra

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
    escaped = escape_controls(text.replace("\\", "\\\\").replace('"', '\\"'))
    return f'"{escaped}"'


def kv(event: str, **fields: Any) -> str:
    """``event=NAME k=v ...`` with values quoted when they contain spaces or quotes."""
    parts = [f"event={event}"]
    parts += [f"{k}={_value(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    level: int = logging.INFO,
    exc_info: BaseException | bool | None = None,
    **fields: Any,
) -> None:
    """Log one structured event line (with ``exc_info``: its traceback as ``exc=``)."""
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "%s",
            kv(event, **fields),
            exc_info=exc_info,
            extra=event_extra(event, fields),
        )


def configure_logging(
    level: str = "INFO", fmt: Format = "text", stream: IO[str] | None = None
) -> None:
    """Root logging for the CLI: every record of the process as ``fmt`` lines on
    ``stream`` (stderr). uvicorn's loggers propagate here too (the server is started
    with ``log_config=None``); `vpp_protocol.logfmt.configure` has the details."""
    configure(level, fmt, stream)


__all__ = ["configure_logging", "escape_controls", "kv", "log_event"]
