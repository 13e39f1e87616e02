"""Helpers of the time-in-force tests: recording device adapters, waits, ack lookups."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import vpp_protocol as pb
from vpp_gateway import Agent, Clock, DeviceAdapter, DeviceError, Limits, ManualClock, Measurement
from vpp_gateway.devices import simulated_device
from vpp_gateway.testing import FakeHeadend
from vpp_protocol.sitefile import AssetConfig

Call = tuple[str, float | None]


class Recording:
    """Wraps a simulated device and records every command; has no ``release`` of its own."""

    def __init__(self, inner: DeviceAdapter) -> None:
        self.inner = inner
        self.calls: list[Call] = []

    @property
    def limits(self) -> Limits:
        return self.inner.limits

    async def read(self) -> Measurement:
        return await self.inner.read()

    async def apply(self, power_kw: float) -> float:
        self.calls.append(("apply", power_kw))
        return await self.inner.apply(power_kw)


class RecordingReleasable(Recording):
    """`Recording` with the optional ``release``; ``fail_release`` makes it refuse."""

    def __init__(self, inner: DeviceAdapter) -> None:
        super().__init__(inner)
        self.fail_release = False

    async def release(self) -> None:
        self.calls.append(("release", None))
        if self.fail_release:
            raise DeviceError("bus timeout on release")
        await self.inner.release()  # type: ignore[attr-defined]  # a simulator has it


class Devices:
    """A device factory that records every device it builds, by asset id."""

    def __init__(self, releasable: bool = True) -> None:
        self.releasable = releasable
        self.by_id: dict[str, Recording] = {}

    def __call__(self, config: AssetConfig, clock: Clock, seed: int) -> DeviceAdapter:
        inner = simulated_device(config, clock, seed)
        dev = RecordingReleasable(inner) if self.releasable else Recording(inner)
        self.by_id[config.asset_id] = dev
        return dev

    def __getitem__(self, asset_id: str) -> Recording:
        return self.by_id[asset_id]


def manual_clock() -> ManualClock:
    """A manual clock at the wall clock's now (the FakeHeadend stamps with the wall clock)."""
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


async def until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Until ``predicate()`` holds (checked every few milliseconds), or TimeoutError."""
    async with asyncio.timeout(within_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def checks(agent: Agent, n: int = 2) -> None:
    """Until the control loop ran ``n`` more full checks: it saw the clock as it is now."""
    target = agent.releaser.checks + n
    await until(lambda: agent.releaser.checks >= target)


def states(headend: FakeHeadend, sid: str) -> list[pb.AckState]:
    return [a.state for a in headend.acks_for(sid)]


def released(headend: FakeHeadend, sid: str) -> list[pb.SetpointAck]:
    return [a for a in headend.acks_for(sid) if a.state == pb.AckState.RELEASED]


async def final(headend: FakeHeadend, sid: str, n: int = 2) -> pb.SetpointAck:
    await headend.wait_for(lambda: len(headend.acks_for(sid)) >= n)
    return headend.acks_for(sid)[-1]


async def release_ack(headend: FakeHeadend, sid: str, n: int = 1) -> pb.SetpointAck:
    await headend.wait_for(lambda: len(released(headend, sid)) >= n)
    return released(headend, sid)[n - 1]


def after(headend: FakeHeadend, asset_id: str, start: int) -> list[pb.Telemetry]:
    """Readings of ``asset_id`` that arrived after the first ``start`` readings."""
    return [t for t in headend.readings[start:] if t.asset_id == asset_id]
