"""Simulated consumers and generic assets: EV charger, controllable load, other."""

from __future__ import annotations

from datetime import datetime

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ._sim_common import Measurement, SimDevice, Status, only


class SimEvCharger(SimDevice):
    """Charges a vehicle at full power (``min_kw``, negative) or at the setpoint.

    With ``vehicle: false`` no car is plugged in: standby at 0 kW. ``session_kwh`` ends the
    charging session (standby) once that much energy has been delivered.
    """

    kind_params = only({"vehicle", "session_kwh"})

    def __init__(self, asset: AssetConfig, clock: Clock, seed: int) -> None:
        super().__init__(asset, clock, seed)
        self.delivered_kwh = 0.0
        self._last: datetime = self._clock.now()

    def _plugged(self) -> bool:
        if not self.param("vehicle", True, bool):
            return False
        limit = self.param("session_kwh", 0.0)
        return not (limit and self.delivered_kwh >= float(limit))

    def _draw_kw(self) -> float:
        if not self._plugged():
            return 0.0
        p = self.setpoint_kw if self.setpoint_kw is not None else self.limits.min_kw
        return min(p, 0.0)

    def measure(self) -> Measurement:
        now = self._clock.now()
        dt_h = max((now - self._last).total_seconds(), 0.0) / 3600
        self._last = now
        self.delivered_kwh += -self._draw_kw() * dt_h
        p = self._draw_kw()
        return Measurement(power_kw=p, status=Status.OK if self._plugged() else Status.STANDBY)


class SimLoad(SimDevice):
    """A controllable load: draws ``base_kw`` (default 60 % of capacity) plus seeded noise.

    A setpoint (≤ 0) makes it draw exactly that.
    """

    kind_params = only({"base_kw", "noise_kw"})

    def measure(self) -> Measurement:
        if self.setpoint_kw is not None:
            return Measurement(power_kw=self.setpoint_kw, status=Status.OK)
        base = float(self.param("base_kw", 0.6 * self.limits.min_kw))
        noise = float(self.param("noise_kw", 0.02 * abs(base)))
        value = self.limits.clamp(base + noise * self._rng.gauss(0.0, 1.0))
        return Measurement(power_kw=value, status=Status.OK)


class SimOther(SimDevice):
    """Any other asset: holds its setpoint exactly, 0 kW without one."""

    def measure(self) -> Measurement:
        return Measurement(power_kw=self.setpoint_kw or 0.0, status=Status.OK)
