"""Simulated PV inverter: a clear-sky curve over the day, curtailable by setpoint."""

from __future__ import annotations

import math

from ._sim_common import Measurement, SimDevice, Status, only


class SimPV(SimDevice):
    """Output = capacity × clear-sky shape × (1 − cloudiness × U[0,1)), capped by the setpoint.

    The clear-sky shape is ``sin(π (h − sunrise) / day_length) ** 1.2`` between sunrise
    and sunset (UTC hours, around ``solar_noon_utc_h``), zero at night.
    """

    kind_params = only({"cloudiness", "solar_noon_utc_h", "day_length_h"})

    def clear_sky_kw(self) -> float:
        noon = float(self.param("solar_noon_utc_h", 12.0))
        length = float(self.param("day_length_h", 12.0))
        x = (self.hours() - (noon - length / 2)) % 24 / length
        if not 0 < x < 1:
            return 0.0
        return float(self.capacity_kw * math.sin(math.pi * x) ** 1.2)

    def measure(self) -> Measurement:
        cloudiness = min(max(float(self.param("cloudiness", 0.0)), 0.0), 1.0)
        available = self.clear_sky_kw() * (1 - cloudiness * self._rng.random())
        available = self.limits.clamp(available)
        cap = self.setpoint_kw if self.setpoint_kw is not None else self.limits.max_kw
        power = max(min(available, cap), self.limits.min_kw)
        status = Status.OK if available > 0 else Status.STANDBY
        return Measurement(power_kw=power, status=status)
