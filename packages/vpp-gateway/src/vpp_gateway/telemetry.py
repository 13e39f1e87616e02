"""Telemetry mux: every tick one reading per asset, stored in one transaction, then sent.

Also the spool replayer: after a reconnect it sends the spooled readings, oldest first, at
a bounded rate, interleaved with live telemetry.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .clock import Clock
from .devices import DeviceError, Measurement
from .envelope import envelope
from .log import EventLog
from .model import Reading, Status
from .runtime import AssetFleet, AssetRuntime
from .settings import GatewaySettings
from .state import StateStore


class Link(Protocol):
    """What the mux needs of the connection."""

    @property
    def is_live(self) -> bool:
        """Registered on an open stream."""
        ...

    def send_telemetry(self, readings: Sequence[Reading]) -> None:
        """Queue live readings for the stream."""
        ...


class TelemetryMux:
    """Reads every asset once per tick and hands the readings to the spool and the link."""

    def __init__(
        self,
        settings: GatewaySettings,
        fleet: AssetFleet,
        store: StateStore,
        clock: Clock,
        link: Link,
        log: EventLog | None = None,
    ) -> None:
        self._settings = settings
        self._fleet = fleet
        self._store = store
        self._clock = clock
        self._link = link
        self._log = log or EventLog()
        self._offline: set[str] = set()
        self.ticks = 0

    async def _read(self, asset: AssetRuntime) -> Measurement:
        try:
            m = await asyncio.wait_for(asset.device.read(), self._settings.device_timeout)
        except (DeviceError, TimeoutError) as exc:
            reason = str(exc) or f"no answer in {self._settings.device_timeout:g} s"
            if asset.asset_id not in self._offline:
                self._offline.add(asset.asset_id)
                self._log.warning("asset_offline", asset_id=asset.asset_id, reason=reason)
            return Measurement(0.0, Status.OFFLINE)
        if asset.asset_id in self._offline:
            self._offline.discard(asset.asset_id)
            self._log.info("asset_online", asset_id=asset.asset_id)
        if not math.isfinite(m.power_kw):
            return Measurement(0.0, Status.FAULT)
        return m

    async def tick(self) -> list[Reading]:
        """Take, store and send one reading per asset; returns all readings taken."""
        now = self._clock.now()
        mono = self._clock.monotonic()
        assets = list(self._fleet)
        measurements = await asyncio.gather(*(self._read(a) for a in assets))
        readings: list[Reading] = []
        wire: list[Reading] = []
        for asset, m in zip(assets, measurements, strict=True):
            env = envelope(asset.config, asset.limits, m)
            r = Reading(
                asset.asset_id,
                asset.next_seq(),
                now,
                m.power_kw,
                m.status,
                m.soc_pct,
                asset.setpoint_kw,
                asset.setpoint_id,
                env.min_kw,
                env.max_kw,
                env.min_stable_kw,
                asset.setpoint_ends_at,
            )
            asset.note_reading(r, mono)
            readings.append(r)
            if asset.accepted:
                wire.append(r)
        live = self._link.is_live
        stamp = int(now.timestamp())
        stats = await self._store.record_tick(
            wire,
            self._fleet.seqs(),
            stamp if live else 0,
            int(stamp - self._settings.retain_sent_s),
        )
        if stats.dropped_now:
            self._log.warning(
                "spool_full",
                dropped=stats.dropped_now,
                dropped_total=stats.dropped,
                depth=stats.depth,
                used_bytes=stats.used_bytes,
                max_bytes=self._store.max_bytes,
                note="oldest readings dropped",
            )
        if live and self._link.is_live:
            self._link.send_telemetry(wire)
        self.ticks += 1
        return readings

    async def run(self) -> None:
        """Tick every ``tick_s`` without drift until cancelled."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.tick()
            except Exception as exc:  # a bad tick must not stop telemetry for good
                self._log.error("tick_failed", error=f"{type(exc).__name__}: {exc}")
            next_at += self._settings.tick_s
            delay = next_at - loop.time()
            if delay < 0:  # fell behind: skip missed ticks rather than burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)


class SpoolReplayer:
    """Sends the spool's unsent readings, oldest first, at most ``replay_rate`` per second."""

    def __init__(
        self,
        settings: GatewaySettings,
        fleet: AssetFleet,
        store: StateStore,
        clock: Clock,
        log: EventLog | None = None,
        batch_size: int = 200,
    ) -> None:
        self._settings = settings
        self._fleet = fleet
        self._store = store
        self._clock = clock
        self._log = log or EventLog()
        self._batch = max(1, min(batch_size, int(settings.replay_rate)))
        self.replayed = 0

    async def run(self, send: Callable[[Sequence[Reading]], Awaitable[None]]) -> None:
        """Drain the spool through ``send`` (which returns once the batch is on the wire)."""
        loop = asyncio.get_running_loop()
        interval = self._batch / self._settings.replay_rate
        after = 0
        started = False
        while True:
            batch = await self._store.next_batch(self._batch, after)
            if not batch:
                if started:
                    self._log.info("replay_done", replayed=self.replayed, depth=self._store.depth)
                    started = False
                after = 0
                await asyncio.sleep(self._settings.tick_s)
                continue
            if not started:
                self._log.info(
                    "replay_start", depth=self._store.depth, rate=self._settings.replay_rate
                )
                started = True
            t0 = loop.time()
            ids = [i for i, _ in batch]
            wanted = [r for _, r in batch if (a := self._fleet.get(r.asset_id)) and a.accepted]
            if wanted:
                await send(wanted)
            await self._store.mark_sent(ids, int(self._clock.now().timestamp()))
            self.replayed += len(wanted)
            after = ids[-1]
            await asyncio.sleep(max(0.0, interval - (loop.time() - t0)))
