"""Telemetry and ack intake on their own: what a frame's readings become, how drops are
counted and logged, and what happens to an ack whatever its handler does."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpp_headend.ack_intake import AckIntake
from vpp_headend.domain import Ack
from vpp_headend.errors import ProtocolViolationError, UnavailableError
from vpp_headend.intake import Drop, DropLog, TelemetryIntake
from vpp_headend.metrics import Metrics
from vpp_headend.sessions import Session
from vpp_protocol.upb import pb

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
TS = int(NOW.timestamp())


def _session(*assets: str, default: str = "") -> Session:
    return Session("site-a", uuid.uuid4(), 1, frozenset(assets), default, "?", "", NOW, NOW)


def _reading(asset_id: str, seq: int, power_kw: float = 1.0, *, ts: int = TS) -> pb.Telemetry:
    r = pb.Telemetry(asset_id=asset_id, seq=seq, power_kw=power_kw)
    r.ts.seconds = ts
    return r


class _Seen:
    """`Ingest.accept`'s contract: False for an (asset, seq) already taken."""

    def __init__(self) -> None:
        self.taken: set[tuple[str, int]] = set()

    def __call__(self, asset_id: str, seq: int) -> bool:
        if (asset_id, seq) in self.taken:
            return False
        self.taken.add((asset_id, seq))
        return True


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_frame_becomes_rows_and_drops_with_reasons() -> None:
    intake = TelemetryIntake(_Seen(), max_readings=100)
    session = _session("a-1", "a-2")
    frame = [
        _reading("a-1", 1),
        _reading("a-1", 1),  # duplicate: neither a row nor a drop
        _reading("b-9", 1),
        _reading("", 1),
        _reading("a-2", 0),
        _reading("a-2", 2, float("nan")),
        _reading("a-2", 3),
    ]
    got = intake.readings(session, frame, NOW)
    assert got.received == 7
    assert [(r[0], r[1], r[3]) for r in got.rows] == [("a-1", 1, NOW), ("a-2", 3, NOW)]
    assert got.drops == (
        Drop("b-9", "foreign_asset"),
        Drop("", "no_asset"),
        Drop("a-2", "invalid", "seq_out_of_range", 0),
        Drop("a-2", "invalid", "power_not_finite", 2),
    )


def test_a_legacy_session_reading_without_asset_is_its_asset() -> None:
    intake = TelemetryIntake(_Seen(), max_readings=100)
    got = intake.readings(_session("a-1", default="a-1"), [_reading("", 5)], NOW)
    assert [(r[0], r[1]) for r in got.rows] == [("a-1", 5)]
    assert got.drops == ()


def test_a_batch_over_the_limit_is_a_protocol_violation() -> None:
    intake = TelemetryIntake(_Seen(), max_readings=2)
    batch = pb.TelemetryBatch(readings=[_reading("a-1", n) for n in range(1, 4)])
    with pytest.raises(ProtocolViolationError, match="TelemetryBatch of 3 readings; the limit"):
        intake.batch(_session("a-1"), batch, NOW)
    batch = pb.TelemetryBatch(readings=[_reading("a-1", n) for n in range(1, 3)])
    assert len(intake.batch(_session("a-1"), batch, NOW).rows) == 2


_READINGS = st.lists(
    st.tuples(
        st.sampled_from(["a-1", "a-2", "b-1", ""]),
        st.integers(-1, 5),
        st.sampled_from([1.0, -3.5, float("inf"), 2e7]),
    ),
    max_size=30,
)


@given(readings=_READINGS)
def test_every_reading_is_a_row_a_drop_or_a_duplicate(
    readings: list[tuple[str, int, float]],
) -> None:
    seen = _Seen()
    got = TelemetryIntake(seen, max_readings=100).readings(
        _session("a-1", "a-2"), [_reading(a, max(s, 0), p) for a, s, p in readings], NOW
    )
    assert got.received == len(readings)
    assert {r[0] for r in got.rows} <= {"a-1", "a-2"}
    assert len({(r[0], r[1]) for r in got.rows}) == len(got.rows)  # deduplicated
    assert len(got.rows) + len(got.drops) <= got.received


def test_drops_are_counted_each_and_logged_once_per_session_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    metrics = Metrics()
    log = DropLog(metrics)
    first, second = _session("a-1"), _session("a-1")
    drops = (
        Drop("b-1", "foreign_asset"),
        Drop("a-1", "invalid", "ts_missing", 4),
        Drop("b-2", "foreign_asset"),
        Drop("a-1", "invalid", "ts_missing", 5),
        Drop("a-1", "invalid", "power_out_of_range", 6),
    )
    log.record(first, drops)
    log.record(first, drops)
    log.record(second, drops[:1])
    assert _sample(metrics, "vpp_telemetry_dropped_total", reason="foreign_asset") == 5
    assert _sample(metrics, "vpp_telemetry_dropped_total", reason="invalid") == 6
    assert _sample(metrics, "vpp_telemetry_rejected_total", reason="ts_missing") == 4
    assert _sample(metrics, "vpp_telemetry_rejected_total", reason="power_out_of_range") == 2
    lines = [r.getMessage() for r in caplog.records if "event=telemetry_dropped" in r.getMessage()]
    assert [line.split(" reason=")[1].split()[0] for line in lines] == [
        "foreign_asset",
        "ts_missing",
        "power_out_of_range",
        "foreign_asset",  # the second session logs its own first
    ]
    assert f"session_id={first.session_id}" in lines[0]
    assert "asset_id=a-1 reason=ts_missing seq=4" in lines[1]


def _ack_msg(setpoint_id: str = "") -> pb.SetpointAck:
    return pb.SetpointAck(setpoint_id=setpoint_id or str(uuid.uuid4()), state=pb.ACK_STATE_APPLIED)


async def test_an_ack_reaches_its_handler_with_the_stream_marked_held() -> None:
    session = _session("a-1", default="a-1")
    handled: list[tuple[Ack, bool]] = []

    async def handle(s: Session, ack: Ack) -> None:
        handled.append((ack, s.backpressured))

    msg = _ack_msg()
    await AckIntake(handle, Metrics()).take(session, msg)
    ((ack, held),) = handled
    assert (str(ack.setpoint_id), ack.asset_id, ack.state, held) == (
        msg.setpoint_id,
        "a-1",
        "applied",
        True,
    )
    assert not session.backpressured


async def test_a_bad_or_failing_ack_is_counted_and_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    metrics = Metrics()
    session = _session("a-1")

    async def unavailable(s: Session, ack: Ack) -> None:
        raise UnavailableError("database away")

    async def broken(s: Session, ack: Ack) -> None:
        raise RuntimeError("a bug")

    await AckIntake(unavailable, metrics).take(session, _ack_msg("not-a-uuid"))
    assert _sample(metrics, "vpp_grpc_protocol_errors_total") == 1
    assert _sample(metrics, "vpp_setpoint_acks_ignored_total", why="invalid") == 1
    assert "event=ack_invalid site_id=site-a" in caplog.text

    await AckIntake(unavailable, metrics).take(session, _ack_msg())
    assert "event=ack_failed detail=" in caplog.text

    await AckIntake(broken, metrics).take(session, _ack_msg())
    assert _sample(metrics, "vpp_setpoint_acks_ignored_total", why="error") == 1
    assert "event=ack_dropped site_id=site-a" in caplog.text
    assert not session.backpressured
