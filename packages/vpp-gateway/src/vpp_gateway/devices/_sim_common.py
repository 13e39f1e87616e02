"""Shared parts of the bundled simulated devices: parameters, seeded randomness, limits."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ..model import Status
from .base import DeviceError, Limits, Measurement

#: Parameters every simulator accepts.
COMMON_PARAMS = frozenset({"seed", "offline", "fail_apply"})
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
        own_seed = self._params.get("seed", seed)
        self._rng = random.Random(f"{own_seed}:{asset.asset_id}")
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

    @property
    def limits(self) -> Limits:
        return self._limits

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
        if self.fail_apply:
            raise DeviceError("simulated device refused the command")
        return self.command(self._limits.clamp(power_kw))

    def measure(self) -> Measurement:
        """The reading now (synchronous core of `read`)."""
        raise NotImplementedError

    def command(self, power_kw: float) -> float:
        """Take a setpoint within limits; return what was set (synchronous core of `apply`)."""
        self.setpoint_kw = power_kw
        return power_kw


def only(params: Iterable[str]) -> frozenset[str]:
    """A kind's own parameter names."""
    return frozenset(params)


__all__ = ["DEFAULT_CAPACITY_KW", "Measurement", "SimDevice", "SimParamError", "Status", "only"]
