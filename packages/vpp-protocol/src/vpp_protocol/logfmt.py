"""One log format for the headend, the gateway and the libraries under them (issue 19).

Text (the default, for people), one record per line::

    ts=2026-11-27T10:00:00.123Z level=info logger=vpp_headend.serve event=listening http_port=8000

JSON lines (``fmt="json"``, for Loki, ELK and the like), one object per line with
``ts``, ``level``, ``logger``, ``event`` and the event's fields as JSON values::

    {"ts": "2026-11-27T10:00:00.123Z", "level": "info", "logger": "vpp_headend.serve",
     "event": "listening", "http_port": 8000}

A record logged through an ``event=NAME k=v`` helper (`vpp_headend.logs.log_event`,
`vpp_gateway.log.EventLog`) carries its event and fields (`event_extra`): the text line
is the helper's own ``kv`` text, the JSON object has the fields with their types. A
record from anywhere else (uvicorn, Litestar, a ``%s`` message, a Python warning) is
``event=message msg="..."``, so every line has an ``event``. An exception or a stack is a
field of the same line (``exc=``, ``stack=``): a record is always exactly one line.

Lines cannot be forged by what a peer sends: in text, every control character (C0 with
NUL, CR, LF and TAB; DEL; C1 with U+0085; format characters such as bidi overrides;
U+2028/U+2029; a lone surrogate) is written as an escape (``\\n``, ``\\x00``, ``\\u2028``,
``\\U000e0001``), in each value
and again over the whole line; JSON is written ASCII-only, so no raw control character
can appear there either.

`configure` (called by the CLIs only) puts one handler on the root logger and lets
every other logger propagate to it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from typing import IO, Any, Literal, get_args

Format = Literal["text", "json"]
#: The values of `Format`, for option parsers.
FORMATS: tuple[str, ...] = get_args(Format)

#: The record attributes an event helper sets (see `event_extra`).
EVENT_ATTR = "vpp_event"
FIELDS_ATTR = "vpp_fields"
#: The event of a record that was not logged as one (uvicorn's lines, ``%s`` messages).
MESSAGE_EVENT = "message"
#: What every JSON object has before the event's own fields.
RESERVED = ("ts", "level", "logger", "event")

#: Loggers that may have been given handlers of their own (uvicorn's default logging
#: config does that and stops propagation); `configure` takes them over.
_TAKEN_OVER = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "litestar")

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Cc: C0, DEL and C1 controls (NUL, CR, LF, U+0085); Cf: format (bidi overrides, zero
# width); Zl/Zp: U+2028/U+2029, which some viewers break lines on; Cs: a lone surrogate,
# which no stream can encode.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_ESCAPE_WIDTHS = {"x": 2, "u": 4, "U": 8}
_NEEDS_QUOTES = frozenset(' ="\\')
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}


class LogSetupError(ValueError):
    """`configure` was given a level or format it does not know; the message says which."""


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape; backslashes as they are."""
    if text.isprintable():  # the common case, checked in C
        return text
    out: list[str] = []
    for ch in text:
        if unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            ch = _SHORT_ESCAPES.get(ch) or _code_escape(ord(ch))
        out.append(ch)
    return "".join(out)


def _code_escape(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def quote(text: str) -> str:
    """``text`` as a key=value value: bare when it can be, else in double quotes with
    backslashes and quotes escaped, then control characters (`escape_controls`)."""
    if text and text.isprintable() and not any(c in _NEEDS_QUOTES for c in text):
        return text
    return '"' + escape_controls(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def event_extra(event: str, fields: Mapping[str, object]) -> dict[str, object]:
    """The ``extra=`` of a record logged as ``event`` with ``fields`` (None values are
    left out, as ``kv`` leaves them out)."""
    return {EVENT_ATTR: event, FIELDS_ATTR: {k: v for k, v in fields.items() if v is not None}}


def parse_kv(text: str) -> dict[str, str]:
    """The ``key=value`` pairs of a text line, values unquoted and unescaped.

    The inverse of the text format, for tests and tools (a log shipper has its own
    logfmt parser). ValueError when ``text`` is not a sequence of ``key=value`` pairs
    separated by single spaces.
    """
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        space = text.find(" ", i)
        if eq <= i or (0 <= space < eq):
            raise ValueError(f"not key=value at column {i}: {text[i : i + 30]!r}")
        key = text[i:eq]
        i = eq + 1
        if i < n and text[i] == '"':
            value, i = _quoted(text, i + 1)
        else:
            end = text.find(" ", i)
            end = n if end < 0 else end
            value, i = text[i:end], end
        out[key] = value
        if i < n:
            if text[i] != " " or i + 1 == n:
                raise ValueError(f"expected one space between pairs at column {i}")
            i += 1
    return out


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The unescaped value of a quoted string whose first character is at ``i``, and
    the index after its closing quote."""
    out: list[str] = []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in _UNESCAPES:
                out.append(_UNESCAPES[nxt])
                i += 2
                continue
            width = _ESCAPE_WIDTHS.get(nxt)
            digits = text[i + 2 : i + 2 + width] if width else ""
            if width and len(digits) == width:
                try:
                    out.append(chr(int(digits, 16)))
                except ValueError:
                    pass
                else:
                    i += 2 + width
                    continue
        out.append(ch)
        i += 1
    raise ValueError("unterminated quoted value")


def _timestamp(record: logging.LogRecord) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{whole}.{int(record.msecs):03d}Z"


def _is_event(record: logging.LogRecord) -> bool:
    return isinstance(getattr(record, EVENT_ATTR, None), str)


class _Base(logging.Formatter):
    """What both formats share: the exception and stack texts, formatted once."""

    def _extras(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        extra: list[tuple[str, str]] = []
        if record.exc_info:
            extra.append(("exc", self.formatException(record.exc_info)))
        elif record.exc_text:
            extra.append(("exc", record.exc_text))
        if record.stack_info:
            extra.append(("stack", self.formatStack(record.stack_info)))
        return extra


class TextFormatter(_Base):
    """``ts=... level=... logger=... event=... k=v ...`` on one line.

    ``record.exc_text`` is left unset, so other handlers format an exception their own way.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not (_is_event(record) or message.startswith("event=")):
            message = f"event={MESSAGE_EVENT} msg={quote(message)}"
        parts = [
            f"ts={_timestamp(record)}",
            f"level={record.levelname.lower()}",
            f"logger={quote(record.name)}",
            message,
        ]
        parts += [f"{key}={quote(text)}" for key, text in self._extras(record)]
        return escape_controls(" ".join(parts))


class JsonFormatter(_Base):
    """One JSON object per record (ASCII only, no line break inside)."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields: Mapping[str, object]
        message = record.getMessage()
        if _is_event(record):
            obj["event"] = getattr(record, EVENT_ATTR)
            fields = getattr(record, FIELDS_ATTR, None) or {}
        else:
            obj["event"], fields = _event_of(message)
        for key, value in fields.items():
            obj[f"{key}_" if key in obj else key] = _json_value(value)
        for key, text in self._extras(record):
            obj[f"{key}_" if key in obj else key] = text
        return json.dumps(obj, ensure_ascii=True, separators=(", ", ": "))


def _event_of(message: str) -> tuple[str, Mapping[str, object]]:
    """A message that was formatted as ``event=NAME k=v`` by hand, as event and fields;
    anything else as `MESSAGE_EVENT` with the message as ``msg``."""
    if message.startswith("event="):
        try:
            pairs = parse_kv(message)
        except ValueError:
            pass
        else:
            event = pairs.pop("event")
            return event, pairs
    return MESSAGE_EVENT, {"msg": message}


def _json_value(value: object) -> Any:
    """``value`` as a JSON value: numbers, booleans and strings as they are, times in
    ISO 8601, collections as arrays, anything else as its ``str``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Enum):
        return _json_value(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


class InfoAsDebug(logging.Filter):
    """A library's chatter as DEBUG: its INFO records (those whose message starts with one
    of ``prefixes``; every one without prefixes) become DEBUG records, dropped unless the
    root logger logs DEBUG. Its warnings and errors pass as they are. Add it to the
    library's logger with `quiet`."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        if self.prefixes and not str(record.msg).startswith(self.prefixes):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet(logger_name: str, *prefixes: str) -> None:
    """Add an `InfoAsDebug` filter to ``logger_name`` once (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, InfoAsDebug) and f.prefixes == prefixes for f in logger.filters):
        logger.addFilter(InfoAsDebug(*prefixes))


def formatter(fmt: Format = "text") -> logging.Formatter:
    """The formatter of ``fmt``; LogSetupError for another name."""
    if fmt == "text":
        return TextFormatter()
    if fmt == "json":
        return JsonFormatter()
    raise LogSetupError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to ``sys.stderr`` as it is then: a CLI run in-process (a test's
    CliRunner) swaps stderr for a buffer it closes afterwards, and a handler that kept
    that buffer would fail on every later record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def configure(level: str = "INFO", fmt: Format = "text", stream: IO[str] | None = None) -> None:
    """Every log record of this process as ``fmt`` lines on ``stream`` (stderr) from ``level``.

    One handler on the root logger; the loggers of uvicorn and Litestar lose any handler
    of their own and propagate to it, and Python warnings are logged too (``py.warnings``),
    so nothing reaches the stream in another format. LogSetupError names an unknown level
    or format.
    """
    name = level.strip().upper()
    if name not in logging.getLevelNamesMapping():
        raise LogSetupError(f"log level must be debug, info, warning or error, not {level!r}")
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(name)
    for logger_name in _TAKEN_OVER:
        taken = logging.getLogger(logger_name)
        taken.handlers.clear()
        taken.propagate = True
    logging.captureWarnings(True)


__all__ = [
    "EVENT_ATTR",
    "FIELDS_ATTR",
    "FORMATS",
    "MESSAGE_EVENT",
    "RESERVED",
    "Format",
    "InfoAsDebug",
    "JsonFormatter",
    "LogSetupError",
    "TextFormatter",
    "configure",
    "escape_controls",
    "event_extra",
    "formatter",
    "parse_kv",
    "quiet",
    "quote",
]
