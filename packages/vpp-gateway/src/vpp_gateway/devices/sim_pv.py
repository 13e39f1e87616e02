"""Simulated PV inverter: a clear-sky curve over the day, curtailable by setpoint."""

from __future__ import annotations

import math
import random

from ._sim_common import Measurement, SimDevice, Status, only
from .base import Limits


class SimPV(SimDevice):
    """Available = capacity × clear-sky shape × (1 − cloudiness × U[0,1)); output ≤ setpoint.

    The clear-sky shape is ``sin(π (h − sunrise) / day_length) ** 1.2`` between sunrise
    and sunset (UTC hours, around ``solar_noon_utc_h``), zero at night. ``U`` is drawn
    once per minute of the clock from the seed, so the power available at one instant is
    the same whoever asks. The live envelope is [min_kw, available]: the inverter can only
    curtail down from what the sun gives. A setpoint is a curtailment limit it keeps.
    """

    kind_params = only({"cloudiness", "solar_noon_utc_h", "day_length_h"})
    _cloud: tuple[int, float] = (-1, 0.0)

    def clear_sky_kw(self) -> float:
        noon = float(self.param("solar_noon_utc_h", 12.0))
        length = float(self.param("day_length_h", 12.0))
        x = (self.hours() - (noon - length / 2)) % 24 / length
        if not 0 < x < 1:
            return 0.0
        return float(self.capacity_kw * math.sin(math.pi * x) ** 1.2)

    def _cloud_draw(self) -> float:
        minute = int(self._clock.now().timestamp() // 60)
        if self._cloud[0] != minute:
            draw = random.Random(f"{self._seed}:{self.asset.asset_id}:{minute}").random()
            self._cloud = (minute, draw)
        return self._cloud[1]

    def available_kw(self) -> float:
        """What the sun gives now, within the inverter's limits."""
        cloudiness = min(max(float(self.param("cloudiness", 0.0)), 0.0), 1.0)
        sun = self.clear_sky_kw() * (1 - cloudiness * self._cloud_draw())
        return self.limits.clamp(sun)

    def envelope(self) -> Limits:
        hi = self.available_kw()
        return Limits(min(self.limits.min_kw, hi), hi)

    def measure(self) -> Measurement:
        available = self.available_kw()
        cap = self.setpoint_kw if self.setpoint_kw is not None else self.limits.max_kw
        power = max(min(available, cap), self.limits.min_kw)
        status = Status.OK if available > 0 else Status.STANDBY
        return self.reading(power, status)
