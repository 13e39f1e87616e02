"""Connection behaviour on real sockets: spool and replay, reconnect, heartbeats, takeover."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import uuid
from collections import defaultdict
from typing import Any

import grpclib.const
import grpclib.server
import pytest

import vpp_protocol as pb
from vpp_gateway.backoff import Backoff
from vpp_gateway.testing import FakeHeadend

MANY = "site_id: site-m\nassets:\n" + "".join(
    f"  - {{asset_id: m-{i:03d}, kind: other, capacity_kw: 10}}\n" for i in range(40)
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_each_once_in_order(headend: FakeHeadend, seq_now: dict[str, int]) -> None:
    by_asset: dict[str, list[int]] = defaultdict(list)
    for t in headend.readings:
        by_asset[t.asset_id].append(t.seq)
    for asset_id, upto in seq_now.items():
        seqs = by_asset[asset_id]
        assert len(seqs) == len(set(seqs)), f"{asset_id}: a reading arrived twice"
        assert set(range(1, upto + 1)) <= set(seqs), f"{asset_id}: readings missing"


async def test_outage_spools_then_replays_everything_once(
    headend: FakeHeadend, make_settings, running, caplog
) -> None:
    settings = make_settings(port=headend.port)
    async with running(settings) as agent:
        await headend.wait_for(lambda: len(headend.readings) >= 10)
        port = headend.port
        await headend.stop()
        await asyncio.sleep(1.0)  # ~10 ticks of 5 assets go to the spool
        assert agent.store.depth >= 30
        assert not agent.connection.is_live
        outage_seq = agent.fleet.seqs()
        await headend.start(port=port)
        await headend.wait_for(
            lambda: all(
                headend.stored.get(a, set()) >= set(range(1, s + 1)) for a, s in outage_seq.items()
            ),
            within_s=10,
        )
    _assert_each_once_in_order(headend, outage_seq)
    assert headend.duplicates == 0
    # replayed readings arrive oldest first: per asset, the spooled seqs keep their order
    replay_part = [t.seq for t in headend.readings if t.asset_id == "t-pv-1"]
    spooled = [s for s in replay_part if s in range(1, outage_seq["t-pv-1"] + 1)]
    assert spooled == sorted(spooled)
    assert "disconnected" in caplog.text
    assert "replay_start" in caplog.text


async def test_spool_survives_restart(headend: FakeHeadend, make_settings, running) -> None:
    port = headend.port
    await headend.stop()
    settings = make_settings(port=port)
    async with running(settings) as agent:
        await asyncio.sleep(0.6)
        depth = agent.store.depth
        seq_before = agent.fleet.seqs()
    assert depth >= 15
    await headend.start(port=port)
    async with running(settings):
        await headend.wait_for(
            lambda: all(
                headend.stored.get(a, set()) >= set(range(1, s + 1)) for a, s in seq_before.items()
            ),
            within_s=10,
        )
    _assert_each_once_in_order(headend, seq_before)


@pytest.mark.slow
async def test_spool_bound_respected_in_long_outage(make_settings, running, caplog) -> None:
    port = _free_port()  # nothing listens: every attempt is refused
    settings = make_settings(
        MANY, port=port, tick_s=0.02, spool_max_bytes=65536, replay_rate=2000.0
    )
    async with running(settings) as agent:
        await asyncio.sleep(3.0)  # 40 assets × 50 ticks/s ≈ 6,000 readings ≫ 64 KiB
        assert agent.store.dropped > 0
        assert agent.store.used_bytes <= settings.spool_max_bytes
        assert agent.store.path.stat().st_size <= settings.spool_max_bytes + 8 * 4096
        assert agent.connection.failures >= 3
        assert all(d <= settings.backoff_cap_s for d in agent.connection.last_delays)
        at_reconnect = agent.fleet.seqs()
        headend = FakeHeadend(heartbeat_s=0.5)
        await headend.start(port=port)
        try:
            await headend.wait_for(lambda: agent.connection.is_live, within_s=5)
            await headend.wait_for(lambda: agent.store.depth == 0, within_s=10)
        finally:
            await headend.stop()
    assert "spool_full" in caplog.text
    assert "refused" in caplog.text
    assert headend.duplicates == 0
    for asset_id in ("m-000", "m-039"):
        seqs = [t.seq for t in headend.readings if t.asset_id == asset_id]
        # the oldest were dropped; what survived is the most recent, contiguous, in order.
        # (Live readings taken after the reconnect may arrive before the replay: on a busy
        # machine they did; the headend orders by seq.)
        spooled = [s for s in seqs if s <= at_reconnect[asset_id]]
        assert spooled
        assert spooled[0] > 1
        assert spooled == list(range(spooled[0], at_reconnect[asset_id] + 1))


async def test_heartbeat_timeout_closes_and_reconnects(make_settings, running, caplog) -> None:
    headend = FakeHeadend(heartbeat_s=0.2, silent=True)
    await headend.start()
    try:
        async with running(make_settings(port=headend.port)):
            await headend.wait_for(lambda: len(headend.sessions) >= 2, within_s=5)
    finally:
        await headend.stop()
    assert "heartbeat timeout" in caplog.text


async def test_superseded_is_logged_and_reconnects(
    headend: FakeHeadend, make_settings, running, caplog
) -> None:
    async with running(make_settings(port=headend.port)):
        await headend.wait_for(lambda: headend.current is not None)
        await headend.close_session(pb.CloseReason.SUPERSEDED, "newer session epoch 9")
        await headend.wait_for(lambda: len(headend.sessions) >= 2, within_s=5)
    assert 'reason="superseded: newer session epoch 9"' in caplog.text


async def test_heartbeats_are_sent(headend: FakeHeadend, make_settings, running) -> None:
    async with running(make_settings(port=headend.port)):
        await headend.wait_for(lambda: headend.heartbeats >= 2, within_s=3)


class _Extreme(random.Random):
    """A random source that always draws the top (or bottom) of the range."""

    def __init__(self, top: bool) -> None:
        super().__init__(0)
        self.top = top

    def uniform(self, a: float, b: float) -> float:
        return b if self.top else a


def test_backoff_is_exponential_and_capped() -> None:
    b = Backoff(1.0, 60.0, _Extreme(top=True))
    assert [b.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    b.reset()
    assert b.next_delay() == 1.0
    assert Backoff(1.0, 60.0, _Extreme(top=False)).next_delay() == 0.0


def test_backoff_full_jitter_spreads_over_the_whole_range() -> None:
    b = Backoff(1.0, 60.0, random.Random(42))
    for _ in range(10):
        b.next_delay()
    draws = [b.next_delay() for _ in range(2000)]
    assert all(0.0 <= d <= 60.0 for d in draws)
    assert min(draws) < 3.0
    assert max(draws) > 57.0
    a, b = Backoff(1.0, 60.0, random.Random(7)), Backoff(1.0, 60.0, random.Random(7))
    assert [a.next_delay() for _ in range(8)] == [b.next_delay() for _ in range(8)]


class _ClosingHeadend:
    """A headend that answers Register, then sends SessionClosed and watches the client side.

    It records whether the gateway half-closed its request stream (``recv_message`` returns
    None) within a second, as the real headend expects before it ends the call.
    """

    def __init__(self) -> None:
        self.ended_by_gateway: list[bool] = []

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            "/vpp.agent.v1.AgentService/Connect": grpclib.const.Handler(
                self._connect,
                grpclib.const.Cardinality.STREAM_STREAM,
                pb.AgentMessage,
                pb.HeadendMessage,
            )
        }

    async def _connect(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        reg = await stream.recv_message()
        assert reg is not None
        await stream.send_message(
            pb.HeadendMessage(
                register_result=pb.RegisterResult(
                    accepted_asset_ids=[a.asset_id for a in reg.register.assets],
                    session_id=str(uuid.uuid4()),
                    epoch=len(self.ended_by_gateway) + 1,
                    protocol_version=pb.PROTOCOL_VERSION,
                    heartbeat_interval_s=0.5,
                )
            )
        )
        await stream.send_message(
            pb.HeadendMessage(
                session_closed=pb.SessionClosed(
                    reason=pb.CloseReason.SUPERSEDED, detail="newer session"
                )
            )
        )
        ended = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while await stream.recv_message() is not None:
                    pass  # heartbeats or telemetry sent before it read SessionClosed
                ended = True
        self.ended_by_gateway.append(ended)


async def test_gateway_ends_its_stream_on_session_closed(make_settings, running) -> None:
    fake = _ClosingHeadend()
    server = grpclib.server.Server([fake])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with running(make_settings(port=port)):
            deadline = asyncio.get_running_loop().time() + 10
            while len(fake.ended_by_gateway) < 2:
                assert asyncio.get_running_loop().time() < deadline, fake.ended_by_gateway
                await asyncio.sleep(0.05)
    finally:
        server.close()
        await server.wait_closed()
    assert fake.ended_by_gateway[:2] == [True, True]
