"""Shared parts of the bundled simulated devices: parameters, seeded randomness, limits.

Also the fault injection every simulator takes (``fail_apply``, ``fail_release``,
``apply_factor``, ``apply_cap_kw``, ``apply_delay_s``): rules the envelope does not show,
on purpose, for tests of what the gateway does when a device sets less than asked,
refuses, or is slow.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterable
from typing import Any

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ..model import Status
from .base import DeviceError, Limits, Measurement

#: Parameters every simulator accepts.
COMMON_PARAMS = frozenset(
    {
        "seed",
        "offline",
        "fail_apply",
        "fail_release",
        "apply_factor",
        "apply_cap_kw",
        "apply_delay_s",
    }
)
#: Capacity a simulator assumes when the site file gives none.
DEFAULT_CAPACITY_KW = 10.0


class SimParamError(ValueError):
    """A ``simulator:`` parameter is unknown or has the wrong type."""


class SimDevice:
    """Base of the simulated devices: deterministic given the clock and the seed."""

    kind_params: frozenset[str] = frozenset()

    def __init__(self, asset: AssetConfig, clock: Clock, seed: int) -> None:
        self.asset = asset
        self._clock = clock
        self._params: dict[str, Any] = dict(asset.simulator)
        unknown = set(self._params) - COMMON_PARAMS - self.kind_params
        if unknown:
            allowed = ", ".join(sorted(COMMON_PARAMS | self.kind_params))
            raise SimParamError(
                f"asset {asset.asset_id}: unknown simulator parameter(s) "
                f"{', '.join(sorted(unknown))} (allowed: {allowed})"
            )
        self._seed = self._params.get("seed", seed)
        self._rng = random.Random(f"{self._seed}:{asset.asset_id}")
        self.capacity_kw = (
            asset.capacity_kw if asset.capacity_kw is not None else DEFAULT_CAPACITY_KW
        )
        lo, hi = asset.bounds
        if not math.isfinite(lo):
            lo = -self.capacity_kw
        if not math.isfinite(hi):
            hi = self.capacity_kw
        self._limits = Limits(lo, hi)
        self.offline = bool(self.param("offline", False, bool))
        self.fail_apply = bool(self.param("fail_apply", False, bool))
        self.fail_release = bool(self.param("fail_release", False, bool))
        self.apply_factor = self.number("apply_factor", 1.0, 0.0, 1.0)
        self.apply_cap_kw = self.number("apply_cap_kw", math.inf, 0.0)
        self.apply_delay_s = self.number("apply_delay_s", 0.0, 0.0)
        self.setpoint_kw: float | None = None

    def param(self, name: str, default: Any, kind: type | tuple[type, ...] = (int, float)) -> Any:
        """A simulator parameter of the given type, or its default."""
        value = self._params.get(name, default)
        if isinstance(value, bool) and kind in ((int, float), float, int):
            raise SimParamError(f"asset {self.asset.asset_id}: simulator.{name} must be a number")
        if not isinstance(value, kind):
            raise SimParamError(
                f"asset {self.asset.asset_id}: simulator.{name} has the wrong type ({value!r})"
            )
        return value

    def number(
        self, name: str, default: float, lo: float = -math.inf, hi: float = math.inf
    ) -> float:
        """A numeric parameter within [lo, hi] (finite unless it is the default)."""
        value = float(self.param(name, default))
        if name in self._params and not (math.isfinite(value) and lo <= value <= hi):
            where = f">= {lo:g}" if hi == math.inf else f"within [{lo:g}, {hi:g}]"
            raise SimParamError(
                f"asset {self.asset.asset_id}: simulator.{name} must be a number {where}, "
                f"not {value!r}"
            )
        return value

    @property
    def limits(self) -> Limits:
        return self._limits

    def envelope(self) -> Limits:
        """What the device can be set to now; the static limits unless a kind knows better."""
        return self._limits

    def min_stable(self) -> float | None:
        """Minimum stable load in kW of a semi-continuous device; None when continuous."""
        return None

    def reading(self, power_kw: float, status: Status, soc_pct: float | None = None) -> Measurement:
        """A measurement with the live envelope of this moment."""
        env = self.envelope()
        return Measurement(
            power_kw=power_kw,
            status=status,
            soc_pct=soc_pct,
            available_min_kw=env.min_kw,
            available_max_kw=env.max_kw,
            min_stable_kw=self.min_stable(),
        )

    def hours(self) -> float:
        """UTC hour of day of the clock, fractional."""
        t = self._clock.now()
        return t.hour + t.minute / 60 + t.second / 3600 + t.microsecond / 3.6e9

    async def read(self) -> Measurement:
        if self.offline:
            raise DeviceError("simulated device is offline")
        return self.measure()

    async def apply(self, power_kw: float) -> float:
        if self.offline:
            raise DeviceError("simulated device is offline")
        if self.apply_delay_s:
            # Cancelled here (the gateway gave up waiting), the command never takes effect.
            await asyncio.sleep(self.apply_delay_s)
        if self.fail_apply:
            raise DeviceError("simulated device refused the command")
        return self.command(self.weakened(self._limits.clamp(power_kw)))

    async def release(self) -> None:
        """Drop the setpoint: back to the kind's own behaviour (`ReleasableDevice`)."""
        if self.offline:
            raise DeviceError("simulated device is offline")
        if self.fail_release:
            raise DeviceError("simulated device refused the release")
        self.drop()

    def drop(self) -> None:
        """Forget the setpoint (synchronous core of `release`)."""
        self.setpoint_kw = None

    def weakened(self, power_kw: float) -> float:
        """The command after ``apply_factor`` and ``apply_cap_kw`` (fault injection)."""
        p = power_kw * self.apply_factor
        return math.copysign(min(abs(p), self.apply_cap_kw), p) + 0.0  # never -0.0

    def measure(self) -> Measurement:
        """The reading now (synchronous core of `read`)."""
        raise NotImplementedError

    def command(self, power_kw: float) -> float:
        """Take a setpoint within limits; return what the device does now (core of `apply`).

        The device holds ``power_kw`` as its target and delivers what its live envelope
        allows of it.
        """
        self.setpoint_kw = power_kw
        return self.envelope().clamp(power_kw)


def only(params: Iterable[str]) -> frozenset[str]:
    """A kind's own parameter names."""
    return frozenset(params)


__all__ = ["DEFAULT_CAPACITY_KW", "Measurement", "SimDevice", "SimParamError", "Status", "only"]
