"""The gateway agent: wires fleet, state, telemetry, setpoints, control and connection; owns
the tasks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar

from ._version import __version__
from .clock import Clock, SystemClock
from .connection import Connection, SessionHooks
from .control import ControlTable
from .devices import DeviceFactory, simulated_device
from .failsafe import LAST_HEARD_KEY
from .log import EventLog
from .model import Ack, RegisterOutcome, ReleaseCommand, SetpointCommand
from .parts import ControlParts
from .releaser import Releaser
from .runtime import AssetFleet, AssetRuntime
from .setpoints import SetpointHandler
from .settings import GatewaySettings
from .state import StateStore
from .status import write_status
from .telemetry import SpoolReplayer, TelemetryMux
from .tls import client_context

#: Setpoints and releases waiting for the worker; more means the headend is flooding us.
MAX_QUEUED_SETPOINTS = 1000

Command = SetpointCommand | ReleaseCommand
T = TypeVar("T")


#: How the headend words the rejection of every claim of a site it does not know.
SITE_NOT_REGISTERED = "is not registered"


def site_not_registered(outcome: RegisterOutcome) -> bool:
    """Whether the headend refused the whole Register because its registry lacks the site
    (the gateway cannot tell from a code: the protocol has none for it; the reason says)."""
    return (
        not outcome.accepted
        and bool(outcome.rejected)
        and all(SITE_NOT_REGISTERED in r.reason for r in outcome.rejected)
    )


class Agent:
    """One gateway process's worth of work. `start` it, `stop` it; `wait` until it ends."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        device_factory: DeviceFactory = simulated_device,
        log: EventLog | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._factory = device_factory
        self.log = log or EventLog()
        self._task: asyncio.Task[None] | None = None
        self._setpoints: asyncio.Queue[Command] = asyncio.Queue(MAX_QUEUED_SETPOINTS)
        # Built by start():
        self.store: StateStore
        self.fleet: AssetFleet
        self.connection: Connection
        self.mux: TelemetryMux
        self.setpoints: SetpointHandler
        self.control: ControlTable
        self.releaser: Releaser
        self.replayer: SpoolReplayer

    async def start(self) -> None:
        """Open the state, build the fleet and start every task."""
        if self._task is not None:
            raise RuntimeError("agent already started")
        s = self.settings
        self.store = await StateStore.open(s.state_dir, s.spool_max_bytes)
        last_heard, ssl_context = await self._close_on_error(self._load())
        self._wire(last_heard, ssl_context)
        self._log_started()
        # before connecting: its acks wait for the session
        await self._close_on_error(self.releaser.recover())
        self._task = asyncio.create_task(self._run(), name="vpp-gateway")

    async def _close_on_error(self, step: Awaitable[T]) -> T:
        """``step``'s result; if it fails, start gives up and the state is closed."""
        try:
            return await step
        except BaseException:
            await self.store.close()
            raise

    async def _load(self) -> tuple[float | None, ssl.SSLContext | None]:
        """Fleet and control table from the state; (when the headend was last heard, TLS)."""
        s = self.settings
        seqs = await asyncio.to_thread(self.store.load_seqs)
        self.fleet = AssetFleet.build(
            s.assets, self._factory, self.clock, s.seed, seqs, legacy=s.legacy
        )
        self.control = await asyncio.to_thread(ControlTable.load, self.store)
        last_heard = await asyncio.to_thread(self.store.load_meta, LAST_HEARD_KEY)
        ctx: ssl.SSLContext | None = None
        if s.tls is not None:
            ctx = await asyncio.to_thread(client_context, s.tls)
        return last_heard, ctx

    def _wire(self, last_heard: float | None, ssl_context: ssl.SSLContext | None) -> None:
        """Build the parts that run as tasks, on the loaded fleet and state."""
        s = self.settings
        self.replayer = SpoolReplayer(s, self.fleet, self.store, self.clock, self.log)
        self.connection = Connection(
            s,
            self.clock,
            SessionHooks(self._on_register, self._on_setpoint, self.replayer),
            rng=self._rng,
            ssl_context=ssl_context,
            log=self.log,
        )
        self.mux = TelemetryMux(s, self.fleet, self.store, self.clock, self.connection, self.log)
        parts = ControlParts(
            s, self.fleet, self.store, self.control, self.clock, self._emit_ack, self.log
        )
        self.setpoints = SetpointHandler(parts)
        connection = self.connection
        self.releaser = Releaser(
            parts, lambda: (connection.heard_at, connection.heard_count), last_heard=last_heard
        )

    def _log_started(self) -> None:
        s = self.settings
        self.log.info(
            "started",
            site_id=s.site_id,
            assets=len(self.fleet),
            legacy=s.legacy,
            headend=self.connection.where,
            state_dir=str(s.state_dir),
            tick_s=s.tick_s,
            spool_depth=self.store.depth,
            version=__version__,
            failsafe_after_s=s.failsafe_after_s,
        )

    async def stop(self) -> None:
        """Cancel every task, write a last status and close the state."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._write_status()
        await self.store.close()
        self.log.info("stopped", site_id=self.settings.site_id)

    async def wait(self) -> None:
        """Until the agent's tasks end (they end only by `stop` or a crash)."""
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.mux.run(), name="vpp-telemetry")
            tg.create_task(self.connection.run(), name="vpp-connection")
            tg.create_task(self._setpoint_worker(), name="vpp-setpoints")
            tg.create_task(self.releaser.run(), name="vpp-control")
            tg.create_task(self._housekeeping(), name="vpp-housekeeping")

    # -- callbacks from the connection ---------------------------------------------
    def _emit_ack(self, ack: Ack) -> None:
        self.connection.send_ack(ack)

    def _on_setpoint(self, cmd: Command) -> None:
        try:
            self._setpoints.put_nowait(cmd)
        except asyncio.QueueFull:
            self.log.warning(
                "setpoint_dropped", setpoint_id=cmd.setpoint_id, reason="too many setpoints queued"
            )

    async def _on_register(self, outcome: RegisterOutcome) -> None:
        rejected = {r.asset_id: r.reason for r in outcome.rejected}
        site_unknown = site_not_registered(outcome)
        if site_unknown:  # one line that says what to do, not one per asset
            where = self.settings.site_file or "<site file>"
            self.log.error(
                "site_not_registered",
                site_id=self.settings.site_id,
                headend=self.connection.where,
                fix=f"on the headend: vpp-headend assets import {where}",
                note="every asset rejected; retrying with backoff",
            )
        for asset in self.fleet:
            if asset.asset_id in rejected:
                asset.accepted, asset.reject_reason = False, rejected[asset.asset_id]
            elif outcome.accepted and not self.fleet.legacy:
                asset.accepted = asset.asset_id in outcome.accepted
                asset.reject_reason = "" if asset.accepted else "not in the headend's accepted list"
            else:
                asset.accepted, asset.reject_reason = True, ""
            if not asset.accepted and not site_unknown:
                self.log.warning(
                    "asset_rejected",
                    asset_id=asset.asset_id,
                    reason=asset.reject_reason,
                    note="telemetry kept off the wire",
                )
            mark = outcome.watermarks.get(asset.asset_id, 0)
            if self.fleet.legacy and outcome.default_asset_id:
                mark = max(mark, outcome.watermarks.get(outcome.default_asset_id, 0))
            if mark > asset.seq:
                self.log.warning(
                    "seq_behind_headend",
                    asset_id=asset.asset_id,
                    seq=asset.seq,
                    watermark=mark,
                    note="state directory reset? continuing above it",
                )
                asset.seq = mark
        watermarks = dict(outcome.watermarks)
        if self.fleet.legacy and outcome.default_asset_id in watermarks:
            watermarks[self.fleet.only().asset_id] = watermarks[outcome.default_asset_id]
        depth = await self.store.prepare_replay(watermarks)
        if depth:
            self.log.info("replay_pending", depth=depth)

    # -- owned loops ----------------------------------------------------------------------
    async def _setpoint_worker(self) -> None:
        while True:
            cmd = await self._setpoints.get()
            try:
                if isinstance(cmd, ReleaseCommand):
                    await self.releaser.cancel(cmd)
                else:
                    await self.setpoints.handle(cmd)
            except Exception as exc:  # a bug in one setpoint must not stop the next
                self.log.error(
                    "setpoint_failed",
                    setpoint_id=cmd.setpoint_id,
                    error=f"{type(exc).__name__}: {exc}",
                )

    async def _housekeeping(self) -> None:
        mono = self.clock.monotonic
        last_stats = mono()
        last_prune = mono()
        while True:
            await asyncio.sleep(min(self.settings.tick_s, 5.0))
            await self._write_status()
            if mono() - last_stats >= self.settings.stats_interval_s:
                last_stats = mono()
                self._log_stats()
            if mono() - last_prune >= 60.0:
                last_prune = mono()
                gone = await self.store.journal_prune(self.clock.now().timestamp())
                if gone:
                    self.log.debug("journal_pruned", removed=gone, kept=self.store.journal_size)

    def _log_stats(self) -> None:
        c = self.connection
        self.log.info(
            "stats",
            state=c.state,
            session_id=c.session_id or None,
            spool_depth=self.store.depth,
            spool_dropped=self.store.dropped,
            spool_bytes=self.store.used_bytes,
            readings_sent=c.sent_readings,
            replayed=self.replayer.replayed,
        )
        now = self.clock.monotonic()
        for a in self.fleet:
            self.log.info(
                "asset_stats",
                asset_id=a.asset_id,
                rate_per_min=a.rate_per_min(now),
                seq=a.seq,
                setpoint_kw=a.setpoint_kw,
                last_apply=a.applied_at,
                online=a.online,
                accepted=a.accepted,
            )

    def snapshot(self) -> dict[str, Any]:
        """Everything `vpp-gateway status` shows."""
        mono = self.clock.monotonic()
        return {
            "site_id": self.settings.site_id,
            "pid": os.getpid(),
            "agent_version": __version__,
            "updated_at": self.clock.now().isoformat(),
            "tick_s": self.settings.tick_s,
            "connection": _connection_status(self.connection),
            "spool": {
                "depth": self.store.depth,
                "dropped": self.store.dropped,
                "used_bytes": self.store.used_bytes,
                "max_bytes": self.store.max_bytes,
                "replayed": self.replayer.replayed,
            },
            "journal_size": self.store.journal_size,
            "failsafe": self.releaser.snapshot(),
            "in_force": len(self.control.setpoints()),
            "assets": [_asset_status(a, self.control, mono) for a in self.fleet],
        }

    async def _write_status(self) -> None:
        try:
            await asyncio.to_thread(write_status, self.settings.state_dir, self.snapshot())
        except OSError as exc:
            self.log.warning("status_write_failed", error=str(exc))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _connection_status(c: Connection) -> dict[str, Any]:
    return {
        "headend": c.where,
        "state": c.state,
        "since": c.state_since.isoformat(),
        "last_reason": c.last_reason,
        "session_id": c.session_id,
        "epoch": c.epoch,
        "connects": c.connects,
        "failures": c.failures,
        "readings_sent": c.sent_readings,
    }


def _asset_status(a: AssetRuntime, control: ControlTable, mono: float) -> dict[str, Any]:
    r = a.last_reading
    return {
        "asset_id": a.asset_id,
        "kind": a.config.kind,
        "seq": a.seq,
        "power_kw": r.power_kw if r else None,
        "soc_pct": r.soc_pct if r else None,
        "status": r.status.value if r else None,
        "reading_ts": r.ts.isoformat() if r else None,
        "setpoint_kw": a.setpoint_kw,
        "setpoint_id": a.setpoint_id,
        "setpoint_ends_at": _iso(a.setpoint_ends_at),
        "applied_at": _iso(a.applied_at),
        "control": _control_status(control, a.asset_id),
        "rate_per_min": a.rate_per_min(mono),
        "accepted": a.accepted,
        "reject_reason": a.reject_reason,
    }


def _control_status(control: ControlTable, asset_id: str) -> dict[str, Any] | None:
    """The setpoint in force on one asset: what the gateway commanded, until when;
    "releasing": its control ended, the device has not confirmed yet."""
    held = control.of(asset_id)
    if held is None:
        return None
    in_force = control.setpoint(held.setpoint_id)
    return {
        "setpoint_id": held.setpoint_id,
        "power_kw": held.power_kw,
        "ends_at": _iso(in_force.ends_at) if in_force else None,
        "releasing": held.releasing.value if held.releasing else None,
    }
