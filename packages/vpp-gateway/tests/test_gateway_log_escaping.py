"""The gateway's log lines cannot be forged (issue 14): what a device, a site file or the
headend puts in a value, a message or an exception is escaped, one record per line."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator

from vpp_gateway.log import LOGGER_NAME, EventLog, configure, kv

HOSTILE = "dev\r\nevent=forged\x00 \x1b[2J\x7f\x85\u2028\u2029\u202e end"
ESCAPED = "dev\\r\\nevent=forged\\x00 \\x1b[2J\\x7f\\x85\\u2028\\u2029\\u202e end"


@contextlib.contextmanager
def _gateway_log() -> Iterator[io.StringIO]:
    """The CLI's real `configure` handler, writing to a buffer for this block."""
    logger = logging.getLogger(LOGGER_NAME)
    saved = logger.handlers[:], logger.level, logger.propagate
    buf = io.StringIO()
    configure("info", stream=buf)
    try:
        yield buf
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def _lines(text: str) -> list[str]:
    assert text, "nothing was logged"
    for raw in ("\x00", "\r", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e"):
        assert raw not in text, repr(raw)
    lines = text.split("\n")
    assert lines.pop() == ""  # each record ends with one line break, nothing after
    for line in lines:
        assert line.startswith("ts="), line
    return lines


def test_a_value_cannot_forge_a_line() -> None:
    with _gateway_log() as buf:
        EventLog().warning("device_error", asset_id="a-1", detail=HOSTILE)
    [line] = _lines(buf.getvalue())
    assert f'detail="{ESCAPED}"' in line


def test_messages_and_tracebacks_outside_kv_cannot_forge_a_line() -> None:
    with _gateway_log() as buf:
        logging.getLogger(f"{LOGGER_NAME}.devices").warning("raw %s", HOSTILE)
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            logging.getLogger(LOGGER_NAME).exception("failed")
    first, second = _lines(buf.getvalue())
    assert first.endswith(f'event=message msg="raw {ESCAPED}"')
    assert ' exc="Traceback' in second
    assert f"ValueError: {ESCAPED}" in second


def test_kv_quotes_backslashes_so_an_escape_is_unambiguous() -> None:
    # A literal backslash-n sent by a peer must not read like an escaped line break.
    assert kv("e", v="a\\nb") == 'event=e v="a\\\\nb"'
    assert kv("e", v="a\nb") == 'event=e v="a\\nb"'
    assert kv("e", v="plain-1.0") == "event=e v=plain-1.0"
