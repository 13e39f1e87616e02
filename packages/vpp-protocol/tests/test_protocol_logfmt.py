"""The one log format of the headend and the gateway (issue 19): key=value text lines or
JSON lines, one per record, that a peer's text cannot forge."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import Enum

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpp_protocol.logfmt import (
    LogSetupError,
    configure,
    escape_controls,
    event_extra,
    parse_kv,
    quiet,
    quote,
)

HOSTILE = 'dev\r\nevent=forged\x00 "x" \\n \x1b[2J\x7f\x85\u2028\u2029\u202e\U000e0001 end'
RAW_CONTROLS = ("\x00", "\r", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e", "\U000e0001")


class Mode(Enum):
    AUTO = "auto"


@contextlib.contextmanager
def _logged(fmt: str = "text", level: str = "INFO") -> Iterator[io.StringIO]:
    """`configure`'s real handler on a buffer for this block; the root logger restored."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    configure(level, fmt, stream=buf)  # type: ignore[arg-type]
    try:
        yield buf
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    """What the packages' event helpers do: their own kv text, the fields alongside."""
    text = " ".join([f"event={event}", *(f"{k}={quote(str(v))}" for k, v in fields.items())])
    logger.log(level, "%s", text, extra=event_extra(event, fields))


def _lines(buf: io.StringIO) -> list[str]:
    text = buf.getvalue()
    for raw in RAW_CONTROLS:
        assert raw not in text, repr(raw)
    lines = text.split("\n")
    assert lines.pop() == ""  # each record ends with one line break, nothing after
    return lines


def test_a_text_line_is_key_value_with_ts_level_logger_and_event() -> None:
    with _logged() as buf:
        _event(logging.getLogger("vpp_headend.serve"), "listening", http_port=8000)
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    first, second = _lines(buf)
    assert first.split(" ", 3)[1:] == [
        "level=info",
        "logger=vpp_headend.serve",
        "event=listening http_port=8000",
    ]
    record = parse_kv(first)
    datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")  # UTC, milliseconds
    assert parse_kv(second) | {"ts": ""} == {
        "ts": "",
        "level": "info",
        "logger": "uvicorn.error",
        "event": "message",
        "msg": "Started server process [42]",
    }


def test_values_and_messages_cannot_forge_a_line_and_read_back_as_sent() -> None:
    with _logged() as buf:
        _event(logging.getLogger("vpp_gateway"), "device_error", detail=HOSTILE)
        logging.getLogger("vpp_gateway.devices").warning("raw %s", HOSTILE)
    first, second = _lines(buf)
    assert parse_kv(first)["detail"] == HOSTILE
    assert parse_kv(second)["msg"] == f"raw {HOSTILE}"
    assert parse_kv(second)["level"] == "warning"
    for line in (first, second):
        assert line.startswith("ts=")
        assert " event=forged" not in line.split(" detail=")[0]


def test_an_exception_is_a_field_of_its_records_line() -> None:
    with _logged() as buf:
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            logging.getLogger("vpp_headend.test").exception("failed on %s", "x")
        logging.getLogger("vpp_headend.test").warning("with stack", stack_info=True)
    failed, stacked = _lines(buf)
    record = parse_kv(failed)
    assert record["msg"] == "failed on x"
    assert record["exc"].startswith("Traceback (most recent call last):\n")
    assert record["exc"].endswith(f"ValueError: {HOSTILE}")
    assert parse_kv(stacked)["stack"].startswith("Stack (most recent call last):\n")


def test_a_hand_made_event_message_is_kept_as_it_is() -> None:
    with _logged() as buf:
        logging.getLogger("vpp_headend.ack").error("event=ack_dropped site_id=%s", "s-1")
    [line] = _lines(buf)
    assert line.endswith(" logger=vpp_headend.ack event=ack_dropped site_id=s-1")


def test_a_json_line_has_the_fields_as_json_values() -> None:
    when = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    with _logged("json") as buf:
        _event(
            logging.getLogger("vpp_headend.headend"),
            "grpc_listening",
            level=logging.WARNING,
            port=50051,
            ratio=0.5,
            auto_enroll=False,
            at=when,
            assets=("a-1", "a-2"),
            mode=Mode.AUTO,
            bad=float("nan"),
            level_="x",
            ts="field named ts",
            detail=HOSTILE,
        )
    [line] = _lines(buf)
    assert line.isascii()
    record = json.loads(line)
    assert record.pop("ts").endswith("Z")
    assert record == {
        "level": "warning",
        "logger": "vpp_headend.headend",
        "event": "grpc_listening",
        "port": 50051,
        "ratio": 0.5,
        "auto_enroll": False,
        "at": "2026-11-27T10:00:00+00:00",
        "assets": ["a-1", "a-2"],
        "mode": "auto",
        "bad": "nan",
        "level_": "x",
        "ts_": "field named ts",  # a field never overwrites ts, level, logger or event
        "detail": HOSTILE,
    }


def test_json_lines_for_other_records_and_exceptions() -> None:
    with _logged("json") as buf:
        logging.getLogger("uvicorn.error").info("Application startup complete.")
        logging.getLogger("vpp_headend.ack").error("event=ack_dropped site_id=%s", "s-1")
        try:
            raise RuntimeError(HOSTILE)
        except RuntimeError:
            logging.getLogger("x").exception("boom")
    plain, hand_made, failed = (json.loads(line) for line in _lines(buf))
    assert plain["event"] == "message"
    assert plain["msg"] == "Application startup complete."
    assert hand_made["event"] == "ack_dropped"
    assert hand_made["site_id"] == "s-1"
    assert failed["exc"].endswith(f"RuntimeError: {HOSTILE}")


def test_configure_takes_over_uvicorns_own_handlers() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    stray = logging.StreamHandler(io.StringIO())
    uvicorn_log.addHandler(stray)
    uvicorn_log.propagate = False  # what uvicorn's default log config does
    with _logged() as buf:
        uvicorn_log.info("Uvicorn running")
    assert stray not in uvicorn_log.handlers
    assert uvicorn_log.propagate
    [line] = _lines(buf)
    assert parse_kv(line)["msg"] == "Uvicorn running"


def test_configure_names_an_unknown_level_or_format() -> None:
    with pytest.raises(LogSetupError, match=r"log level .* not 'loud'"):
        configure("loud")
    with pytest.raises(LogSetupError, match=r"log format .* not 'xml'"):
        configure("info", "xml")  # type: ignore[arg-type]


def test_quiet_turns_a_librarys_info_into_debug() -> None:
    chatty = logging.getLogger("test_logfmt.chatty")
    quiet("test_logfmt.chatty")
    quiet("test_logfmt.chatty")  # once only
    assert len(chatty.filters) == 1
    with _logged("text", "INFO") as buf:
        chatty.info("Running commandline:\n%s", ["initdb"])
        chatty.error("Failed to start server")
    [line] = _lines(buf)
    assert parse_kv(line)["level"] == "error"
    with _logged("text", "DEBUG") as buf:
        chatty.info("Running commandline")
    [line] = _lines(buf)
    assert parse_kv(line)["level"] == "debug"


@given(st.text())
def test_any_text_reads_back_from_its_quoted_value(text: str) -> None:
    value = quote(text)
    assert "\n" not in value
    assert escape_controls(value) == value  # nothing left to escape
    assert parse_kv(f"k={value} next=1") == {"k": text, "next": "1"}


@pytest.mark.parametrize("line", ["event", "=x", "a=1  b=2", "a=1 ", 'a="open', "a b=1", "a=1 b"])
def test_parse_kv_refuses_what_is_not_key_value(line: str) -> None:
    with pytest.raises(ValueError, match=r"column|unterminated"):
        parse_kv(line)
