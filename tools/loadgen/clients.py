"""The simulated gateways: many per client process, each on its own gRPC connection.

Each registers, sends one TelemetryBatch of its assets every cadence (random phase),
heartbeats as the headend asked and acks every setpoint APPLIED at once. Both gRPC
clients (`calls.py`) drive this same logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from vpp_headend.eventloop import loop_factory
from vpp_protocol.upb import pb

from .calls import CLIENTS, Call
from .config import LoadConfig
from .messages import asset_id, register_frame
from .procstat import raise_nofile, self_cpu_s


@dataclass
class ClientStats:
    connected: int = 0
    failed: int = 0  # never got a session (refused or connect error)
    batches: int = 0
    acks: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Stop:
    """A client process's stop signal, and a gateway's sleep until its next deadline or
    the stop, whichever comes first.

    Why not ``asyncio.timeout`` around ``Event.wait()``: with a thousand gateways in a
    process, each wake removed its waiter from the Event's deque (O(gateways), ~25 µs) and
    went through task cancellation and a TimeoutError; this is one future and one timer
    handle per wake. Measured at 1,000 gateways in one process: the gateway loop cost about
    165 µs of client CPU per wake with the Event, about 100 µs with this; the raw HTTP/2
    send adds about 20 µs, grpclib's about 150 µs."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: set[asyncio.Future[None]] = set()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        for fut in self._waiters:
            _resolve(fut)
        self._waiters.clear()

    async def sleep_until(self, when: float) -> None:
        """Until ``time.monotonic() >= when`` (the event loop's clock) or the stop."""
        if self._set:
            return
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        handle = loop.call_at(when, _resolve, fut)
        self._waiters.add(fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiters.discard(fut)


class _Telemetry:
    """A gateway's TelemetryBatch, built once; each send only stamps seq and ts."""

    __slots__ = ("_msg", "_readings")

    def __init__(self, g: int, assets: int) -> None:
        self._msg = pb.AgentMessage()
        self._readings = [self._msg.telemetry_batch.readings.add() for _ in range(assets)]
        for a, r in enumerate(self._readings):
            r.asset_id = asset_id(g, a)
            r.power_kw = 10.0 + a
            r.soc_pct = 50.0
            r.status = pb.ASSET_STATUS_OK

    def frame(self, seq: int) -> bytes:
        now_ns = time.time_ns()
        for r in self._readings:
            r.seq = seq
            r.ts.FromNanoseconds(now_ns)
        return bytes(self._msg.SerializeToString())


async def gateway(
    port: int, g: int, cfg: LoadConfig, start_at: float, stop: Stop, st: ClientStats
) -> None:
    """Gateway ``g`` from ``start_at`` (monotonic) until ``stop``; what happened goes to ``st``."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    telemetry = _Telemetry(g, cfg.assets)
    connected = refused = False
    try:
        async with CLIENTS[cfg.client](cfg.host, port) as stream:
            await stream.send(register_frame(g, cfg.assets))
            first = await stream.recv()
            if first is None or first.WhichOneof("body") != "register_result":
                st.error("register_refused")
                st.failed += 1
                refused = True
                return
            seq = max([0, *first.register_result.telemetry_watermarks.values()])
            hb_interval = first.register_result.heartbeat_interval_s or 15.0
            connected = True
            st.connected += 1
            await _session(stream, cfg, stop, st, telemetry, seq, hb_interval)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if refused:
            # Already counted. grpclib raises at the exit of a call whose request stream
            # was not ended ('Outgoing stream was not ended'): not a second failure.
            return
        kind = type(exc).__name__ if connected else f"connect_{type(exc).__name__}"
        st.error(kind)
        if not connected:
            st.failed += 1
        st.samples.setdefault(kind, str(exc)[:200])


async def _session(
    stream: Call, cfg: LoadConfig, stop: Stop, st: ClientStats, telemetry: _Telemetry,
    seq: int, hb_interval: float,
) -> None:  # fmt: skip
    """A registered gateway: telemetry every cadence and heartbeats, acks in a reader
    task, until the stop or the headend ends the session; then the request stream ends."""
    read_task = asyncio.create_task(_reader(stream, st))
    next_tick = time.monotonic() + random.uniform(0, cfg.cadence_s)
    # Heartbeats like a real gateway (one per interval the headend asked for), so
    # the headend's liveness bookkeeping is part of what is measured.
    next_hb = time.monotonic() + random.uniform(0, hb_interval)
    hb = pb.AgentMessage()
    try:
        while not stop.is_set() and not read_task.done():
            await stop.sleep_until(min(next_tick, next_hb))
            if stop.is_set() or read_task.done():
                break
            if time.monotonic() >= next_hb:
                hb.heartbeat.seq += 1
                hb.heartbeat.ts.GetCurrentTime()
                await stream.send(hb.SerializeToString())
                next_hb += hb_interval
                if time.monotonic() < next_tick:
                    continue
            seq += 1
            await stream.send(telemetry.frame(seq))
            st.batches += 1
            next_tick += cfg.cadence_s
        await stream.end()
    finally:
        read_task.cancel()
        with contextlib.suppress(BaseException):
            await read_task


async def _reader(stream: Call, st: ClientStats) -> None:
    """Ack every setpoint APPLIED at once; return at a SessionClosed or the call's end."""
    ack = pb.AgentMessage()
    ack.setpoint_ack.state = pb.ACK_STATE_APPLIED
    while (msg := await stream.recv()) is not None:
        kind = msg.WhichOneof("body")
        if kind == "setpoint":
            sp = msg.setpoint
            ack.setpoint_ack.setpoint_id = sp.setpoint_id
            ack.setpoint_ack.asset_id = sp.asset_id
            ack.setpoint_ack.applied_kw = sp.power_kw
            ack.setpoint_ack.ts.GetCurrentTime()
            await stream.send(ack.SerializeToString())
            st.acks += 1
        elif kind == "session_closed":
            st.error(f"closed_{msg.session_closed.reason}")
            return


def client_main(
    ports: list[int],
    gateways: list[int],
    cfg: LoadConfig,
    t0: float,
    stop_evt: Any,
    connected: Any,
    failed: Any,
    out: Any,
) -> None:
    """A client process (spawned): ``gateways`` spread over ``ports``, connecting at
    ``cfg.connect_rate`` from ``t0``; its totals go to ``out`` once ``stop_evt`` is set."""
    raise_nofile()
    # The harness stops clients through stop_evt; ignore the terminal's ^C here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        runner.run(_client(ports, gateways, cfg, t0, stop_evt, connected, failed, out))


async def _client(
    ports: list[int], gateways: list[int], cfg: LoadConfig, t0: float, stop_evt: Any,
    connected: Any, failed: Any, out: Any,
) -> None:  # fmt: skip
    st = ClientStats()
    stop = Stop()
    interval = 1.0 / cfg.connect_rate
    tasks = [
        asyncio.create_task(gateway(ports[g % len(ports)], g, cfg, t0 + g * interval, stop, st))
        for g in gateways
    ]
    await _publish(st, stop_evt, connected, failed)
    stop.set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        t.cancel()
    out.put(
        {
            "connected": st.connected,
            "batches": st.batches,
            "acks": st.acks,
            "errors": st.errors,
            "samples": st.samples,
            "cpu_s": self_cpu_s(),
        }
    )


async def _publish(st: ClientStats, stop_evt: Any, connected: Any, failed: Any) -> None:
    """Add this process's new connects and failures to the shared counters every 0.2 s,
    until the harness sets ``stop_evt``."""
    reported = failed_reported = 0
    while not stop_evt.is_set():
        await asyncio.sleep(0.2)
        if st.connected != reported:
            with connected.get_lock():
                connected.value += st.connected - reported
            reported = st.connected
        if st.failed != failed_reported:
            with failed.get_lock():
                failed.value += st.failed - failed_reported
            failed_reported = st.failed
