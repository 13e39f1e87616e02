"""Fixtures for the headend tests: a real headend (real PostgreSQL from the root
conftest's ``db_url``, a real grpclib server on loopback, the Litestar app) and a minimal
in-test agent that talks to it through `vpp_protocol.AgentServiceStub` over a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import betterproto2
import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError
from headend_http import app_client
from headend_waits import eventually

import vpp_protocol as vp
from vpp_headend import Headend, Settings, create_app
from vpp_protocol.sitefile import parse_site_file

FAST = {
    "host": "127.0.0.1",
    "http_port": 0,
    "grpc_port": 0,
    "heartbeat_interval_s": 0.5,
    "register_timeout_s": 2.0,
    "sweep_interval_s": 0.1,
    "latest_flush_interval_s": 0.1,
    "shutdown_grace_s": 2.0,
    "ack_grace_s": 1.0,
}


def make_site_yaml(
    site_id: str,
    assets: list[str],
    *,
    groups: list[str] | None = None,
    kind: str = "bess",
    capacity_kw: float = 100.0,
    legacy: bool = False,
) -> str:
    lines = [f"site_id: {site_id}"]
    if groups:
        lines.append(f"groups: [{', '.join(groups)}]")
    if legacy:
        lines.append("legacy: true")
    lines.append("assets:")
    for a in assets:
        lines += [f"  - asset_id: {a}", f"    kind: {kind}", f"    capacity_kw: {capacity_kw}"]
    return "\n".join(lines) + "\n"


@dataclass
class Running:
    """A started headend with an HTTP client on its app."""

    headend: Headend
    http: Any  # httpx.AsyncClient on the app (headend_http.app_client)
    #: Closes the headend (the HTTP client stays open); the fixture calls it at the end too.
    stop: Callable[[], Awaitable[None]]

    @property
    def grpc_port(self) -> int:
        return self.headend.grpc_port

    async def import_site(self, yaml_text: str) -> None:
        await self.headend.registry.import_site(parse_site_file(yaml_text))

    async def dispatch(
        self, expect: int = 202, headers: dict[str, str] | None = None, **body: Any
    ) -> dict[str, Any]:
        resp = await self.http.post("/dispatch", json=body, headers=headers or {})
        assert resp.status_code == expect, resp.text
        return dict(resp.json())

    async def dispatch_state(self, dispatch_id: str) -> dict[str, Any]:
        resp = await self.http.get(f"/dispatch/{dispatch_id}")
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def wait_state(self, dispatch_id: str, state: str, within: float = 5.0) -> dict[str, Any]:
        body: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal body
            body = await self.dispatch_state(dispatch_id)
            return bool(body["state"] == state)

        await eventually(
            check, within, lambda: f"dispatch {dispatch_id} never reached {state}: {body}"
        )
        return body

    async def nothing_queued_before(self, agent: Agent, asset_id: str) -> str:
        """Barrier for "nothing was sent": a dispatch to ``asset_id`` POSTed now is the
        next message ``agent`` gets, so nothing was queued on its stream before it (a
        session's outbox and its stream are FIFO). Returns the probe's dispatch id."""
        probe = (await self.dispatch(asset_id=asset_id, power_kw=1.0))["dispatch_id"]
        got = await agent.setpoint()  # any other message first fails in `Agent.recv`
        assert got.setpoint_id == probe, f"a setpoint was queued before the probe: {got}"
        return str(probe)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, **FAST)  # type: ignore[arg-type]


@pytest.fixture
async def start_headend(
    settings: Settings,
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Start headends on ``settings`` (with overrides); all are stopped at the end."""
    stack = contextlib.AsyncExitStack()

    async def start(**overrides: Any) -> Running:
        s = settings.with_(**overrides) if overrides else settings
        own = contextlib.AsyncExitStack()
        headend = await own.enter_async_context(Headend.open(s))
        stack.push_async_callback(own.aclose)
        client = await stack.enter_async_context(app_client(create_app(s, headend)))
        return Running(headend, client, own.aclose)

    async with stack:
        yield start


@pytest.fixture
async def running(start_headend: Callable[..., Awaitable[Running]]) -> Running:
    return await start_headend()


# -- the in-test agent ----------------------------------------------------------------------


@dataclass
class Agent:
    """A minimal gateway: one bidi stream through AgentServiceStub, messages by hand."""

    port: int
    site_id: str
    channel: Channel | None = None
    outgoing: asyncio.Queue[vp.AgentMessage | None] = field(default_factory=asyncio.Queue)
    incoming: asyncio.Queue[vp.HeadendMessage] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None
    error: BaseException | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    result: vp.RegisterResult | None = None
    seq: dict[str, int] = field(default_factory=dict)
    # Like a live gateway, answer each headend Heartbeat so a slow test (a loaded CI box)
    # is not closed for silence; tests about silence or about our own heartbeats turn it off.
    answer_heartbeats: bool = True

    async def _messages(self) -> AsyncIterator[vp.AgentMessage]:
        while True:
            msg = await self.outgoing.get()
            if msg is None:
                return
            yield msg

    async def _read(self) -> None:
        assert self.channel is not None
        stub = vp.AgentServiceStub(self.channel)
        try:
            async for msg in stub.connect(self._messages()):
                await self.incoming.put(msg)
                if msg.heartbeat is not None and self.answer_heartbeats:
                    self.send(heartbeat=vp.Heartbeat(ts=datetime.now(UTC), seq=msg.heartbeat.seq))
                if msg.session_closed is not None:
                    self.outgoing.put_nowait(None)  # a gateway ends its side on SessionClosed
        except (GRPCError, StreamTerminatedError, ConnectionError) as exc:
            self.error = exc
        finally:
            self.ended.set()

    async def open(self) -> None:
        self.channel = Channel("127.0.0.1", self.port)
        self.reader = asyncio.create_task(self._read())

    def send(self, **body: Any) -> None:
        self.outgoing.put_nowait(vp.AgentMessage(**body))

    async def register(
        self,
        assets: list[str] | None = None,
        *,
        legacy_asset: str = "",
        kind: vp.AssetKind = vp.AssetKind.BESS,
    ) -> vp.RegisterResult:
        descriptors = [
            vp.AssetDescriptor(asset_id=a, kind=kind, capacity_kw=100.0) for a in assets or []
        ]
        self.send(
            register=vp.Register(
                site_id=self.site_id,
                assets=descriptors,
                agent_version="test-agent 0",
                protocol_version=vp.PROTOCOL_VERSION,
                asset_id=legacy_asset,
            )
        )
        msg = await self.recv("register_result")
        self.result = msg.register_result
        assert self.result is not None
        return self.result

    async def recv(self, kind: str, within: float = 5.0) -> vp.HeadendMessage:
        """The next message of ``kind``, skipping heartbeats (unless asked for)."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.incoming.get()
                got, _ = betterproto2.which_one_of(msg, "body")
                if got == kind:
                    return msg
                if got != "heartbeat":
                    raise AssertionError(f"expected {kind}, got {msg}")

    async def no_message(self, kind: str, wait: float = 0.3) -> None:
        """Assert that no message of ``kind`` arrives within ``wait`` seconds. A fixed
        wait passes when the headend is merely slow: prefer the barrier
        `Running.nothing_queued_before`."""
        with contextlib.suppress(TimeoutError):
            msg = await self.recv(kind, wait)
            raise AssertionError(f"unexpected {kind}: {msg}")

    async def setpoint(self, within: float = 5.0) -> vp.Setpoint:
        msg = await self.recv("setpoint", within)
        assert msg.setpoint is not None
        return msg.setpoint

    def telemetry(
        self,
        asset_id: str,
        power_kw: float = 1.0,
        *,
        seq: int | None = None,
        ts: datetime | None = None,
    ) -> vp.Telemetry:
        if seq is None:
            seq = self.seq.get(asset_id, 0) + 1
        self.seq[asset_id] = max(seq, self.seq.get(asset_id, 0))
        return vp.Telemetry(
            asset_id=asset_id,
            seq=seq,
            ts=ts or datetime.now(UTC),
            power_kw=power_kw,
            soc_pct=50.0,
            status=vp.AssetStatus.OK,
            setpoint_kw=None,
            setpoint_id="",
        )

    def send_batch(self, readings: list[vp.Telemetry]) -> None:
        self.send(telemetry_batch=vp.TelemetryBatch(readings=readings))

    def ack(
        self,
        setpoint_id: str,
        state: vp.AckState,
        *,
        asset_id: str = "",
        applied_kw: float | None = None,
        allocations: dict[str, float] | None = None,
        reason: str = "",
    ) -> None:
        self.send(
            setpoint_ack=vp.SetpointAck(
                setpoint_id=setpoint_id,
                asset_id=asset_id,
                state=state,
                reason=reason,
                ts=datetime.now(UTC),
                applied_kw=applied_kw,
                allocations=[
                    vp.Allocation(asset_id=a, power_kw=p) for a, p in (allocations or {}).items()
                ],
                clamped=False,
            )
        )

    async def closed_reason(self, within: float = 5.0) -> vp.CloseReason:
        msg = await self.recv("session_closed", within)
        assert msg.session_closed is not None
        return msg.session_closed.reason

    async def wait_ended(self, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            await self.ended.wait()

    async def close(self) -> None:
        """End the stream politely and close the channel."""
        self.outgoing.put_nowait(None)
        if self.reader is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await asyncio.shield(self.ended.wait())
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def drop(self) -> None:
        """Vanish without ending the stream (a killed gateway)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None


@pytest.fixture
async def agents() -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    """Open agents; all are closed at the end."""
    made: list[Agent] = []

    async def make(port: int, site_id: str) -> Agent:
        agent = Agent(port=port, site_id=site_id)
        await agent.open()
        made.append(agent)
        return agent

    yield make
    for a in made:
        await a.close()


def future_iso(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
def site_yaml() -> Callable[..., str]:
    """``site_yaml(site_id, [asset ids], groups=[...], kind=..., capacity_kw=...)``."""
    return make_site_yaml


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Awaitable[None]]:
    """``await eventually(check, within, message)``; ``check`` may be sync or async."""
    return eventually


@pytest.fixture
def future() -> Callable[[float], str]:
    """``future(seconds)``: an ISO timestamp that many seconds from now."""
    return future_iso
