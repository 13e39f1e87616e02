"""The heartbeat and silence policy of a stream and its sender, on clocks the test sets
(no sleeps)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpp_headend.limits import Limits
from vpp_headend.sessions import Session
from vpp_headend.settings import Settings
from vpp_headend.stream_session import (
    SILENCE_INTERVALS,
    Close,
    CloseSent,
    Heartbeat,
    SilencePolicy,
    StreamClock,
    StreamSettings,
    Tick,
    Wait,
    send_loop,
)
from vpp_protocol.upb import pb


def _until_wait(policy: SilencePolicy, now: float, *, held: bool = False) -> list[Tick]:
    """Everything due at ``now``, up to and including the Wait (what the sender acts on)."""
    out: list[Tick] = []
    while True:
        tick = policy.on_tick(now, held=held)
        out.append(tick)
        if isinstance(tick, Wait):
            return out
        assert len(out) < 10, out


def test_heartbeats_are_due_every_interval_from_the_start() -> None:
    policy = SilencePolicy(1.0, start=100.0)
    assert _until_wait(policy, 100.0) == [Wait(101.0)]
    policy.heard(100.9)
    assert _until_wait(policy, 101.0) == [Heartbeat(1), Wait(102.0)]
    policy.heard(101.9)
    assert _until_wait(policy, 102.0) == [Heartbeat(2), Wait(103.0)]


def test_a_late_tick_sends_one_heartbeat_and_skips_the_missed_ones() -> None:
    policy = SilencePolicy(1.0, start=0.0)
    policy.heard(2.9)
    assert _until_wait(policy, 3.5) == [Heartbeat(1), Wait(4.0)]
    assert _until_wait(policy, 4.0) == [Heartbeat(2), Wait(5.0)]


def test_a_silent_gateway_is_closed_after_three_intervals_once() -> None:
    policy = SilencePolicy(0.5, start=10.0)
    assert _until_wait(policy, 11.49) == [Heartbeat(1), Wait(11.5)]
    assert _until_wait(policy, 11.5) == [
        Close("nothing heard for 1.5 s (3 intervals)"),
        Heartbeat(2),
        Wait(11.5),  # the silence deadline has passed: the sender wakes for the close
    ]
    assert _until_wait(policy, 12.0) == [Heartbeat(3), Wait(11.5)]


def test_hearing_from_the_gateway_moves_the_silence_deadline() -> None:
    policy = SilencePolicy(1.0, start=0.0)
    policy.heard(2.5)
    assert policy.silent_at == 2.5 + SILENCE_INTERVALS
    assert not any(isinstance(t, Close) for t in _until_wait(policy, 3.0))
    assert _until_wait(policy, 5.5)[0] == Close("nothing heard for 3 s (3 intervals)")


def test_a_stream_held_by_backpressure_is_not_silent() -> None:
    # Its frames wait in the headend's buffers: the silence window starts again.
    policy = SilencePolicy(1.0, start=0.0)
    assert _until_wait(policy, 3.0, held=True) == [Heartbeat(1), Wait(4.0)]
    assert policy.silent_at == 6.0
    assert _until_wait(policy, 5.9) == [Heartbeat(2), Wait(6.0)]
    assert _until_wait(policy, 6.0)[0] == Close("nothing heard for 3 s (3 intervals)")


def test_last_seen_is_persisted_at_most_once_per_interval() -> None:
    policy = SilencePolicy(2.0, start=0.0)
    assert [policy.persist_due(t) for t in (0.5, 1.9, 2.0, 3.0, 3.9, 4.1)] == [
        False,
        False,
        True,
        False,
        False,
        True,
    ]


_INTERVALS = st.sampled_from([0.25, 0.5, 1.0, 2.0, 15.0, 45.0])
_STEPS = st.lists(
    st.tuples(st.floats(0.0, 2.0), st.sampled_from(["tick", "held", "heard"])),
    max_size=60,
)


@given(interval=_INTERVALS, start=st.floats(0.0, 1e6), steps=_STEPS)
def test_the_policy_never_beats_early_never_closes_a_live_gateway_and_never_spins(
    interval: float, start: float, steps: list[tuple[float, str]]
) -> None:
    policy = SilencePolicy(interval, start)
    now, heard, seq, closed = start, start, 0, False
    for fraction, what in steps:
        now += fraction * interval
        if what == "heard":
            policy.heard(now)
            heard = now
            continue
        held = what == "held"
        for tick in _until_wait(policy, now, held=held):
            if isinstance(tick, Heartbeat):
                seq += 1
                assert tick.seq == seq  # consecutive from 1
                assert seq <= math.floor((now - start) / interval + 1e-6)  # never early
            elif isinstance(tick, Close):
                assert not closed  # once
                assert not held  # a held stream is not silent
                # A held tick restarts the window later than ``heard``, never earlier.
                assert now - heard >= SILENCE_INTERVALS * interval - 1e-6
                closed = True
            elif not closed:
                assert tick.until > now  # before a close the sender always sleeps


@given(interval=_INTERVALS, start=st.floats(0.0, 1e6), beats=st.integers(0, 40))
def test_a_sender_woken_at_each_deadline_sends_every_heartbeat(
    interval: float, start: float, beats: int
) -> None:
    policy = SilencePolicy(interval, start)
    now, sent = start, []
    end = start + (beats + 0.5) * interval
    while now <= end:
        policy.heard(now)  # a live gateway
        for tick in _until_wait(policy, now):
            assert not isinstance(tick, Close)
            if isinstance(tick, Heartbeat):
                sent.append(tick.seq)
            else:
                now = tick.until
    assert sent == list(range(1, beats + 1))


def test_stream_settings_come_from_the_headend_settings() -> None:
    s = Settings(
        heartbeat_interval_s=2.0,
        register_timeout_s=3.0,
        close_grace_s=0.5,
        admit_concurrency=4,
        max_message_bytes=1000,
        max_assets_per_register=7,
        max_readings_per_message=9,
    )
    assert StreamSettings.from_settings(s) == StreamSettings(
        heartbeat_interval_s=2.0,
        register_timeout_s=3.0,
        close_grace_s=0.5,
        admit_concurrency=4,
        limits=Limits(
            max_message_bytes=1000, max_assets_per_register=7, max_readings_per_message=9
        ),
        require_peer_certificate=False,
    )
    with pytest.raises(ValueError, match="heartbeat_interval_s"):
        StreamSettings(heartbeat_interval_s=0.0, register_timeout_s=1.0)


def test_the_stream_clock_is_injected() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    clock = StreamClock(now=lambda: at, monotonic=lambda: 5.0)
    assert (clock.now(), clock.monotonic()) == (at, 5.0)


# -- the sender, on a fake transport and a clock that does not move -----------------------


def _session() -> Session:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Session("site-a", uuid.uuid4(), 1, frozenset({"a-1"}), "", "?", "", at, at)


class _Sent:
    def __init__(self) -> None:
        self.kinds: list[str | None] = []

    async def __call__(self, msg: pb.HeadendMessage) -> None:
        self.kinds.append(msg.WhichOneof("body"))


async def test_the_sender_closes_a_silent_session_with_a_session_closed() -> None:
    session, sent = _session(), _Sent()
    clock = StreamClock(monotonic=lambda: 10.0)  # 10 intervals of silence at once
    with pytest.raises(CloseSent) as closed:
        await send_loop(sent, session, SilencePolicy(1.0, start=0.0), clock)
    assert (closed.value.reason, closed.value.detail) == (
        "heartbeat_timeout",
        "nothing heard for 3 s (3 intervals)",
    )
    assert sent.kinds == ["heartbeat", "session_closed"]


async def test_the_sender_sends_the_outbox_in_order_then_the_close() -> None:
    session, sent = _session(), _Sent()
    setpoint = pb.HeadendMessage()
    setpoint.setpoint.setpoint_id = "x"
    session.send(setpoint)
    session.close("superseded", "superseded by session y")
    assert not session.send(setpoint)  # nothing is queued after the close
    clock = StreamClock(monotonic=lambda: 0.0)
    with pytest.raises(CloseSent) as closed:
        await send_loop(sent, session, SilencePolicy(1.0, start=0.0), clock)
    assert closed.value.reason == "superseded"
    assert sent.kinds == ["setpoint", "session_closed"]
