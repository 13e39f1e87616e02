"""A small real headend for tests, benchmarks and trying a gateway out: `FakeHeadend`.

It is a real grpclib servicer on a real socket (not a mock): it records what gateways send,
answers Register with watermarks of what it stored, sends heartbeats, and lets a test push
setpoints (with a time in force) and releases, close a session with a reason, or go
silent. ``python -m vpp_gateway.testing --port 50051`` serves one for a manual try.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import betterproto2
import grpclib.const
from grpclib.server import Server, Stream

import vpp_protocol as pb

ServerStream = Stream[pb.AgentMessage, pb.HeadendMessage]


@dataclass(eq=False)
class FakeSession:
    """One gateway stream."""

    site_id: str
    register: pb.Register
    epoch: int
    outbox: asyncio.Queue[pb.HeadendMessage | None] = field(default_factory=asyncio.Queue)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: str = ""


class FakeHeadend(pb.AgentServiceBase):  # type: ignore[misc]  # generated: untyped
    """A minimal headend: stores readings by (asset_id, seq), records acks, pushes setpoints."""

    def __init__(
        self,
        *,
        heartbeat_s: float = 1.0,
        silent: bool = False,
        reject: dict[str, str] | None = None,
        record: bool = True,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.silent = silent
        self.reject = dict(reject or {})
        self.record = record
        self.server: Server | None = None
        self.port = 0
        self.sessions: list[FakeSession] = []
        self.current: FakeSession | None = None
        self.registers: list[pb.Register] = []
        self.readings: list[pb.Telemetry] = []
        self.stored: dict[str, set[int]] = {}
        self.reading_count = 0
        self.duplicates = 0
        self.acks: list[pb.SetpointAck] = []
        self.heartbeats = 0
        self.changed = asyncio.Condition()
        self._epoch = 0

    # -- server life cycle --------------------------------------------------------------
    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            "/vpp.agent.v1.AgentService/Connect": grpclib.const.Handler(
                self._connect,
                grpclib.const.Cardinality.STREAM_STREAM,
                pb.AgentMessage,
                pb.HeadendMessage,
            )
        }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = any free port); returns the port."""
        self.server = Server([self])
        await self.server.start(host, port)
        listener: asyncio.Server | None = getattr(self.server, "_server", None)
        sockets = listener.sockets if listener is not None else ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def stop(self) -> None:
        """End every open stream (grpclib does not), then close the server."""
        for s in self.sessions:
            s.done.set()
        open_ = [s.finished.wait() for s in self.sessions if not s.finished.is_set()]
        if open_:
            # grpclib's close() cancels handlers without ending their streams: end them first
            await asyncio.wait_for(asyncio.gather(*open_), 5.0)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    # -- what tests call ----------------------------------------------------------------
    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        """Until ``predicate()`` holds (checked on every message), or TimeoutError."""
        async with asyncio.timeout(within_s):
            async with self.changed:
                await self.changed.wait_for(predicate)

    async def push_setpoint(
        self,
        power_kw: float,
        *,
        asset_id: str | None = None,
        site_id: str | None = None,
        group_id: str | None = None,
        setpoint_id: str | None = None,
        ttl_s: float | None = 300.0,
        expires_at: datetime | None = None,
        duration_s: float | None = None,
        ends_at: datetime | None = None,
    ) -> str:
        """Send a setpoint on the current session; returns its id."""
        if self.current is None:
            raise RuntimeError("no gateway connected")
        sid = setpoint_id or str(uuid.uuid4())
        now = datetime.now(UTC)
        if expires_at is None and ttl_s is not None:
            expires_at = now + timedelta(seconds=ttl_s)
        sp = pb.Setpoint(
            setpoint_id=sid,
            power_kw=power_kw,
            issued_at=now,
            expires_at=expires_at,
            ends_at=ends_at,
            duration_s=duration_s,
        )
        if asset_id is not None:
            sp.asset_id = asset_id
        elif site_id is not None:
            sp.site_id = site_id
        elif group_id is not None:
            sp.group_id = group_id
        await self.current.outbox.put(pb.HeadendMessage(setpoint=sp))
        return sid

    async def push_release(self, setpoint_id: str, reason: str = "cancelled by operator") -> None:
        """Send a Release of ``setpoint_id`` on the current session."""
        if self.current is None:
            raise RuntimeError("no gateway connected")
        release = pb.Release(setpoint_id=setpoint_id, reason=reason, issued_at=datetime.now(UTC))
        await self.current.outbox.put(pb.HeadendMessage(release=release))

    async def close_session(self, reason: pb.CloseReason, detail: str = "") -> None:
        """Send SessionClosed on the current session and end it."""
        if self.current is None:
            raise RuntimeError("no gateway connected")
        s = self.current
        await s.outbox.put(_closed(reason, detail))
        await s.outbox.put(None)

    def acks_for(self, setpoint_id: str) -> list[pb.SetpointAck]:
        return [a for a in self.acks if a.setpoint_id == setpoint_id]

    def watermarks(self) -> dict[str, int]:
        return {a: max(s) for a, s in self.stored.items() if s}

    # -- the handler ----------------------------------------------------------------------
    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _connect(self, stream: ServerStream) -> None:
        first = await stream.recv_message()
        if first is None or first.register is None:
            if first is not None:
                await stream.send_message(
                    _closed(pb.CloseReason.PROTOCOL_ERROR, "Register must come first")
                )
            return
        reg = first.register
        self._epoch += 1
        session = FakeSession(reg.site_id, reg, self._epoch)
        if self.current is not None and self.current.site_id == reg.site_id:
            old = self.current
            await old.outbox.put(
                _closed(pb.CloseReason.SUPERSEDED, f"newer session epoch {self._epoch}")
            )
            await old.outbox.put(None)
        self.registers.append(reg)
        self.sessions.append(session)
        self.current = session
        result = self._register_result(reg)
        await stream.send_message(pb.HeadendMessage(register_result=result))
        await self._notify()
        await self._serve(stream, session, reg.asset_id if not reg.assets else "")

    def _register_result(self, reg: pb.Register) -> pb.RegisterResult:
        claimed = [a.asset_id for a in reg.assets] or [reg.asset_id]
        accepted = [a for a in claimed if a not in self.reject]
        return pb.RegisterResult(
            accepted_asset_ids=accepted,
            rejected=[
                pb.RejectedAsset(asset_id=a, code=pb.RejectCode.UNKNOWN_ASSET, reason=r)
                for a, r in self.reject.items()
                if a in claimed
            ],
            session_id=str(uuid.uuid4()),
            epoch=self._epoch,
            telemetry_watermarks={a: w for a, w in self.watermarks().items() if a in claimed},
            protocol_version=pb.PROTOCOL_VERSION,
            default_asset_id=reg.asset_id if not reg.assets else "",
            heartbeat_interval_s=self.heartbeat_s,
        )

    async def _serve(self, stream: ServerStream, session: FakeSession, default: str) -> None:
        """Until the session is ended (either side) or the server stops."""
        tasks = [
            asyncio.create_task(self._recv(stream, default)),
            asyncio.create_task(self._send(stream, session)),
        ]
        if not self.silent:
            tasks.append(asyncio.create_task(self._heartbeat(session)))
        waiter = asyncio.create_task(session.done.wait())
        try:
            await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in [*tasks, waiter]:
                t.cancel()
            if self.current is session:
                self.current = None
            session.finished.set()
            await asyncio.gather(*tasks, waiter, return_exceptions=True)
            await self._notify()

    async def _send(self, stream: ServerStream, session: FakeSession) -> None:
        while True:
            msg = await session.outbox.get()
            if msg is None:
                session.done.set()
                return
            await stream.send_message(msg)

    async def _heartbeat(self, session: FakeSession) -> None:
        seq = 0
        while True:
            await asyncio.sleep(self.heartbeat_s)
            seq += 1
            await session.outbox.put(
                pb.HeadendMessage(heartbeat=pb.Heartbeat(ts=datetime.now(UTC), seq=seq))
            )

    def _store(self, t: pb.Telemetry, default: str) -> None:
        asset_id = pb.telemetry_asset_id(t, default)
        seen = self.stored.setdefault(asset_id, set())
        if t.seq in seen:
            self.duplicates += 1
            return
        seen.add(t.seq)
        self.reading_count += 1
        if self.record:
            self.readings.append(t)

    async def _recv(self, stream: ServerStream, default: str) -> None:
        while True:
            msg = await stream.recv_message()
            if msg is None:
                return
            if self.silent:
                continue
            name, body = betterproto2.which_one_of(msg, "body")
            if isinstance(body, pb.TelemetryBatch):
                for t in body.readings:
                    self._store(t, default)
            elif isinstance(body, pb.Telemetry):
                self._store(body, default)
            elif isinstance(body, pb.SetpointAck):
                self.acks.append(body)
            elif name == "heartbeat":
                self.heartbeats += 1
            await self._notify()


def _closed(reason: pb.CloseReason, detail: str) -> pb.HeadendMessage:
    return pb.HeadendMessage(session_closed=pb.SessionClosed(reason=reason, detail=detail))


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A minimal headend for trying a gateway out")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--heartbeat", type=float, default=15.0)
    parser.add_argument("--no-record", action="store_true", help="count readings, keep none")
    args = parser.parse_args(argv)

    async def serve() -> None:
        headend = FakeHeadend(heartbeat_s=args.heartbeat, record=not args.no_record)
        port = await headend.start(args.host, args.port)
        print(f"listening {args.host}:{port}", flush=True)
        try:
            while True:
                await asyncio.sleep(5)
                print(
                    f"readings={headend.reading_count} duplicates={headend.duplicates} "
                    f"acks={len(headend.acks)} sessions={len(headend.sessions)}",
                    flush=True,
                )
        finally:
            await headend.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    _main()
