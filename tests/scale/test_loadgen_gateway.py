"""The load harness's simulated gateway (tools/loadgen/clients.py `gateway`) on both clients.

A scripted Connect server (grpclib, in this event loop, no database) checks what the
gateway sends and ends the session; the same script must give the same counters and
error kinds whether the gateway runs on the raw HTTP/2 client or on grpclib's.

When the server ends a call with a non-OK status (as the headend does after a
SessionClosed), grpclib's server also resets the stream, and grpclib's client then reports
GRPCError or h2's StreamClosedError, or loses a message already received, depending on
which frame it processed first. Those cases are checked exactly on the raw client only.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from vpp_protocol.upb import pb

TOOLS = str(Path(__file__).resolve().parents[2] / "tools")
CLIENTS = ["raw", "grpclib"]


def _loadgen() -> ModuleType:
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    return importlib.import_module("loadgen")


class ScriptedHeadend:
    """Register → RegisterResult (watermark 41, heartbeat 0.1 s) → one Setpoint, expects
    its ack, a TelemetryBatch at seq 42 and a Heartbeat → SessionClosed, then the status:
    OK, or with ``fail`` a gRPC error (as the headend). With ``refuse``: SessionClosed
    instead of a RegisterResult."""

    def __init__(self, *, refuse: bool = False, fail: bool = False) -> None:
        self.refuse = refuse
        self.fail = fail
        self.seen: dict[str, Any] = {}

    async def _close(self, stream: Any, reason: int) -> None:
        await stream.send_message(pb.HeadendMessage(session_closed={"reason": reason}))
        if self.fail:
            raise GRPCError(Status.ABORTED, "closed")
        while await stream.recv_message() is not None:  # until the gateway ends its side
            pass

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/vpp.agent.v1.AgentService/Connect": Handler(
                self.connect, Cardinality.STREAM_STREAM, pb.AgentMessage, pb.HeadendMessage
            )
        }

    async def connect(self, stream: Any) -> None:
        register = await stream.recv_message()
        self.seen["register"] = register.register.site_id
        if self.refuse:
            await self._close(stream, 4)
            return
        result = pb.HeadendMessage()
        result.register_result.heartbeat_interval_s = 0.1
        result.register_result.telemetry_watermarks["lg0-a0"] = 41
        await stream.send_message(result)
        setpoint = pb.HeadendMessage()
        setpoint.setpoint.setpoint_id = "sp-1"
        setpoint.setpoint.asset_id = "lg0-a1"
        setpoint.setpoint.power_kw = -12.5
        await stream.send_message(setpoint)
        while not {"setpoint_ack", "telemetry_batch", "heartbeat"} <= self.seen.keys():
            msg = await stream.recv_message()
            kind = msg.WhichOneof("body")
            self.seen.setdefault(kind, getattr(msg, kind))
        await self._close(stream, 1)


async def _run_gateway(client: str, service: ScriptedHeadend) -> Any:
    lg = _loadgen()
    server = Server([service])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        cfg = lg.LoadConfig(gateways=1, assets=2, cadence_s=0.05, client=client)
        st = lg.ClientStats()
        stop = lg.Stop()
        await asyncio.wait_for(lg.gateway(port, 0, cfg, 0.0, stop, st), 10)
        return st
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("client", CLIENTS)
async def test_gateway_session_is_the_same_on_both_clients(client: str) -> None:
    service = ScriptedHeadend()
    st = await _run_gateway(client, service)
    _check_session(service, st)
    assert st.errors == {"closed_1": 1}


async def test_gateway_session_ended_with_an_error_status_raw() -> None:
    service = ScriptedHeadend(fail=True)
    st = await _run_gateway("raw", service)
    _check_session(service, st)
    assert st.errors == {"closed_1": 1, "GRPCError": 1}


def _check_session(service: ScriptedHeadend, st: Any) -> None:
    assert service.seen["register"] == "lg0"
    ack = service.seen["setpoint_ack"]
    assert (ack.setpoint_id, ack.asset_id, ack.applied_kw) == ("sp-1", "lg0-a1", -12.5)
    assert ack.state == pb.ACK_STATE_APPLIED
    batch = service.seen["telemetry_batch"]
    assert [r.seq for r in batch.readings] == [42, 42]  # continues from the watermark
    assert [r.asset_id for r in batch.readings] == ["lg0-a0", "lg0-a1"]
    assert service.seen["heartbeat"].seq == 1
    assert (st.connected, st.failed, st.acks) == (1, 0, 1)
    assert st.batches >= 1


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("client", CLIENTS)
async def test_gateway_refused_counts_once(client: str, fail: bool) -> None:
    st = await _run_gateway(client, ScriptedHeadend(refuse=True, fail=fail))
    assert (st.connected, st.failed) == (0, 1)
    if client == "raw" or not fail:
        assert st.errors == {"register_refused": 1}


@pytest.mark.parametrize("client", CLIENTS)
async def test_gateway_that_cannot_connect(client: str) -> None:
    lg = _loadgen()
    server = Server([ScriptedHeadend()])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.close()
    await server.wait_closed()
    st = lg.ClientStats()
    cfg = lg.LoadConfig(gateways=1, assets=1, client=client)
    await lg.gateway(port, 0, cfg, 0.0, lg.Stop(), st)
    assert (st.connected, st.failed) == (0, 1)
    assert st.errors == {"connect_ConnectionRefusedError": 1}
