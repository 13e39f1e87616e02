"""Hostile input on the gRPC port: random and truncated frames and absurd values each get
a clear refusal, other sessions keep being served, and memory stays bounded.

The number of generated frames is ``VPP_FUZZ_FRAMES`` (default 120 random + 120
truncated); the seed is ``VPP_FUZZ_SEED`` (default 7) so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, StreamTerminatedError
from sqlalchemy import text

import vpp_protocol as vp

CONNECT = "/vpp.agent.v1.AgentService/Connect"
FRAMES = int(os.environ.get("VPP_FUZZ_FRAMES", "120"))
SEED = int(os.environ.get("VPP_FUZZ_SEED", "7"))
REFUSALS = (Status.INVALID_ARGUMENT, Status.PERMISSION_DENIED)


class RawCodec(CodecBase):
    """Sends and receives message bytes as they are, so a test can send anything."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


class Outcome:
    def __init__(self) -> None:
        self.closed: list[vp.SessionClosed] = []
        self.replies: list[vp.HeadendMessage] = []
        self.status: Status | None = None
        self.message = ""
        self.other: BaseException | None = None

    @property
    def refused(self) -> bool:
        """A SessionClosed with a reason, then an error status: a clear refusal."""
        return bool(self.closed) and bool(self.closed[-1].detail) and self.status in REFUSALS

    @property
    def detail(self) -> str:
        """Why: the SessionClosed detail, else the gRPC status message."""
        return self.closed[-1].detail if self.closed else self.message


async def send_raw(port: int, data: bytes, *, framed: bool, within: float = 5.0) -> Outcome:
    """Open a stream, write ``data`` (as one message, or raw HTTP/2 DATA), end, read all."""
    out = Outcome()
    channel = Channel("127.0.0.1", port, codec=RawCodec())
    try:
        async with asyncio.timeout(within):
            async with channel.request(CONNECT, Cardinality.STREAM_STREAM, bytes, bytes) as stream:
                await stream.send_request()
                if framed:
                    await stream.send_message(data, end=True)
                else:
                    await stream._stream.send_data(data, end_stream=True)
                    stream._end_done = True  # grpclib's record that our side has ended
                while (raw := await stream.recv_message()) is not None:
                    msg = vp.HeadendMessage.parse(raw)
                    out.replies.append(msg)
                    if msg.session_closed is not None:
                        out.closed.append(msg.session_closed)
                await stream.recv_trailing_metadata()
                out.status = _status(stream)
    except GRPCError as exc:
        out.status = exc.status
        out.message = exc.message or ""
    except (StreamTerminatedError, TimeoutError) as exc:
        out.other = exc
    finally:
        channel.close()
    return out


def _status(stream: Any) -> Status | None:
    trailers = dict(stream.trailing_metadata or {})
    code = trailers.get("grpc-status")
    return Status(int(code)) if code is not None else None


def _frame(payload: bytes, announced: int | None = None) -> bytes:
    n = len(payload) if announced is None else announced
    return b"\x00" + n.to_bytes(4, "big") + payload


def _register(site_id: str = "site-a", assets: list[vp.AssetDescriptor] | None = None) -> bytes:
    return bytes(
        vp.AgentMessage(
            register=vp.Register(
                site_id=site_id,
                assets=assets if assets is not None else [_asset("a-1")],
                agent_version="fuzz",
                protocol_version=vp.PROTOCOL_VERSION,
                asset_id="",
            )
        )
    )


def _asset(asset_id: str, **kw: float) -> vp.AssetDescriptor:
    return vp.AssetDescriptor(asset_id=asset_id, kind=vp.AssetKind.BESS, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def fleet(
    running: Any,
    agents: Callable[..., Awaitable[Any]],
    site_yaml: Callable[..., str],
) -> Any:
    """site-a and a well-behaved site-b whose session must survive everything (it answers
    every headend Heartbeat, as a live gateway does: `Agent.answer_heartbeats`)."""
    await running.import_site(site_yaml("site-a", ["a-1"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))
    good = await agents(running.grpc_port, "site-b")
    assert good.answer_heartbeats
    assert (await good.register(["b-1"])).accepted_asset_ids == ["b-1"]
    return good


async def _still_served(
    running: Any, good: Any, eventually: Callable[..., Awaitable[None]]
) -> None:
    """The good session is up and its newest reading gets stored."""
    assert not good.ended.is_set(), good.error
    reading = good.telemetry("b-1", 3.0)
    good.send(telemetry=reading)

    async def stored() -> bool:
        async with running.headend.engine.connect() as conn:
            seq = (
                await conn.execute(text("SELECT max(seq) FROM telemetry WHERE asset_id='b-1'"))
            ).scalar()
        return seq == reading.seq

    await eventually(stored, 5.0, "the good session's reading was not stored")


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def test_random_frames_are_refused_and_others_keep_being_served(
    running: Any, fleet: Any, eventually: Callable[..., Awaitable[None]]
) -> None:
    rng = random.Random(SEED)
    port = running.grpc_port
    tried = refused = 0
    for _ in range(FRAMES):
        size = rng.choice([0, 1, 2, 5, 17, 64, 300, 4096])
        payload = rng.randbytes(size)
        out = await send_raw(port, payload, framed=True)
        tried += 1
        refused += out.refused
        assert out.refused, f"random frame {payload[:40]!r} was not clearly refused: {vars(out)}"
    assert refused == tried
    await _still_served(running, fleet, eventually)
    logging.getLogger(__name__).info("random frames tried=%d refused=%d", tried, refused)


async def test_truncated_frames_are_refused(
    running: Any, fleet: Any, eventually: Callable[..., Awaitable[None]]
) -> None:
    rng = random.Random(SEED + 1)
    good = [
        _register(),
        bytes(vp.AgentMessage(heartbeat=vp.Heartbeat(ts=datetime.now(UTC), seq=1))),
        _register(assets=[_asset(f"a-{i}", capacity_kw=10.0) for i in range(50)]),
    ]
    for _ in range(FRAMES):
        whole = rng.choice(good)
        cut = rng.randrange(0, len(whole))
        if rng.random() < 0.5:
            # the prefix announces the whole message; the stream ends inside it
            out = await send_raw(running.grpc_port, _frame(whole[:cut], len(whole)), framed=False)
        else:
            # a complete frame whose protobuf body is cut short
            out = await send_raw(running.grpc_port, whole[:cut], framed=True)
        assert out.refused or _registered_then_closed(out), vars(out)
    await _still_served(running, fleet, eventually)


def _registered_then_closed(out: Outcome) -> bool:
    """A cut Register that still parses (fewer assets) is answered, then the stream ends."""
    return bool(out.replies) and out.replies[0].register_result is not None


async def test_register_with_10000_assets_is_refused(running: Any, fleet: Any) -> None:
    assets = [_asset(f"x-{i}", capacity_kw=1.0) for i in range(10_000)]
    out = await send_raw(running.grpc_port, _register(assets=assets), framed=True)
    assert out.refused
    assert "10000 assets" in out.closed[-1].detail
    assert out.status is Status.INVALID_ARGUMENT


async def test_megabyte_asset_ids_are_refused_everywhere(
    running: Any,
    fleet: Any,
    agents: Callable[..., Awaitable[Any]],
    eventually: Callable[..., Awaitable[None]],
) -> None:
    huge = "a" * 1_000_000
    a = await agents(running.grpc_port, "site-a")
    a.outgoing.put_nowait(vp.AgentMessage.parse(_register(assets=[_asset(huge), _asset("a-1")])))
    result = (await a.recv("register_result")).register_result
    assert result.accepted_asset_ids == ["a-1"]
    assert result.rejected[0].code == vp.RejectCode.INVALID
    assert len(result.rejected[0].asset_id) <= 64
    a.send(telemetry=a.telemetry(huge, 1.0))
    a.ack("00000000-0000-0000-0000-000000000001", vp.AckState.APPLIED, asset_id=huge)
    a.send(telemetry=a.telemetry("a-1", 1.0))

    async def stored() -> bool:
        async with running.headend.engine.connect() as conn:
            n = (await conn.execute(text("SELECT count(*) FROM telemetry"))).scalar()
        return n == 1

    await eventually(stored, 5.0, "the valid reading was not stored")
    assert not a.ended.is_set()
    await _still_served(running, fleet, eventually)


async def test_absurd_numbers_and_times_are_dropped(
    running: Any,
    fleet: Any,
    agents: Callable[..., Awaitable[Any]],
    eventually: Callable[..., Awaitable[None]],
) -> None:
    a = await agents(running.grpc_port, "site-a")
    a.outgoing.put_nowait(
        vp.AgentMessage.parse(_register(assets=[_asset("a-1", capacity_kw=1e308)]))
    )
    result = (await a.recv("register_result")).register_result
    assert result.rejected[0].code == vp.RejectCode.INVALID
    assert "out of range" in result.rejected[0].reason
    a2 = await agents(running.grpc_port, "site-a")  # supersedes; claims a-1 properly
    await a2.register(["a-1"])
    a2.send_batch(
        [
            a2.telemetry("a-1", 1e308),
            a2.telemetry("a-1", -1e308),
            a2.telemetry("a-1", 5.0, ts=datetime(9999, 12, 31, tzinfo=UTC)),
            a2.telemetry("a-1", 7.0),
        ]
    )

    async def stored() -> bool:
        async with running.headend.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT power_kw FROM telemetry"))).all()
        return [r[0] for r in rows] == [7.0]

    await eventually(stored, 5.0, "only the sane reading should be stored")
    metrics = (await running.http.get("/metrics")).text
    assert 'vpp_telemetry_dropped_total{reason="invalid"} 3.0' in metrics
    resp = await running.http.post("/dispatch", json={"asset_id": "a-1", "power_kw": 1e308})
    assert resp.status_code == 422
    await _still_served(running, fleet, eventually)


async def test_oversized_messages_are_refused_before_they_are_read(
    running: Any, fleet: Any, eventually: Callable[..., Awaitable[None]]
) -> None:
    limit = running.headend.settings.max_message_bytes
    before = _rss_bytes()
    for _ in range(10):
        # announces 1 GiB, sends 256 KiB of it: refused at the prefix, the rest never read
        out = await send_raw(
            running.grpc_port, _frame(b"\x0a" * 262_144, 1 << 30), framed=False, within=5.0
        )
        assert out.refused, vars(out)
        assert "exceeds the limit" in out.closed[-1].detail
    # a real message one byte over the limit
    big = bytes(
        vp.AgentMessage(
            register=vp.Register(
                site_id="site-a", assets=[], asset_id="a-1", agent_version="v" * limit
            )
        )
    )
    out = await send_raw(running.grpc_port, big, framed=True, within=10.0)
    # The client is still pushing the body when the headend answers, so the stream is
    # reset and only the status (with the same detail) arrives.
    assert out.status is Status.INVALID_ARGUMENT, vars(out)
    assert f"limit of {limit} bytes" in out.detail
    grown = _rss_bytes() - before
    assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 1e6:.0f} MB"
    await _still_served(running, fleet, eventually)
