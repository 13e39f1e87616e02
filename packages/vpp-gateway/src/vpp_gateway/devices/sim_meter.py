"""Simulated site meter: a daily load profile with seeded noise; takes no setpoints."""

from __future__ import annotations

import math

from ._sim_common import Measurement, SimDevice, Status, only
from .base import DeviceError


class SimMeter(SimDevice):
    """``P = base + amplitude · sin(2π (h − 6) / 24) + noise · N(0, 1)`` (site consumption < 0)."""

    kind_params = only({"base_kw", "amplitude_kw", "noise_kw"})

    def measure(self) -> Measurement:
        base = float(self.param("base_kw", -0.5 * self.capacity_kw))
        amplitude = float(self.param("amplitude_kw", 0.2 * abs(base)))
        noise = float(self.param("noise_kw", 0.02 * abs(base)))
        value = base + amplitude * math.sin(2 * math.pi * (self.hours() - 6) / 24)
        value += noise * self._rng.gauss(0.0, 1.0)
        return Measurement(power_kw=value, status=Status.OK)

    async def apply(self, power_kw: float) -> float:
        raise DeviceError("a meter takes no setpoints")
