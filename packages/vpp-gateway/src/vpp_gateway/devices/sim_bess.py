"""Simulated battery: state of charge integrates the power it delivers, exactly."""

from __future__ import annotations

import math
from datetime import datetime

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ._sim_common import Measurement, SimDevice, SimParamError, Status, only
from .base import Limits


def _approach(d: float, q: float, rate: float, band: float, dt_h: float) -> float:
    """Distance ``d`` (kWh) to a bound after ``dt_h`` hours of drawing ``q`` kW toward it.

    The power is ``min(q, rate · d / band)``: constant while ``d > q · band / rate``, then
    ``d`` decays as ``exp(−rate · t / band)`` (a taper that never crosses the bound).
    Solved exactly, so one long step and many short ones end in the same place.
    """
    if d <= 0 or q <= 0 or rate <= 0:
        return d
    d_star = q * band / rate
    if d > d_star:
        t_linear = (d - d_star) / q
        if dt_h <= t_linear:
            return d - q * dt_h
        dt_h -= t_linear
        d = d_star
    if band <= 0:
        return 0.0
    return d * math.exp(-rate * dt_h / band)


def _limit(d: float, rate: float, band: float) -> float:
    """Most power (kW, >= 0) the battery can draw toward a bound ``d`` kWh away."""
    if d <= 0 or rate <= 0:
        return 0.0
    return rate if band <= 0 else rate * min(d / band, 1.0)


class SimBess(SimDevice):
    """A battery holding its setpoint within what its state of charge allows.

    Energy stays within [reserve, full]: ``min_soc_pct`` (default 5) is the reserve it
    does not discharge below, ``max_soc_pct`` (default 100) the top. Within ``taper_pct``
    (default 5) of either bound the power it can give (or take) falls linearly to 0:
    ``P_max = rate · min(distance / band, 1)``. The live envelope reports exactly that, so
    a battery near empty shows it cannot discharge and near full that it cannot charge.
    No setpoint means idle (0 kW).
    """

    kind_params = only({"initial_soc_pct", "min_soc_pct", "max_soc_pct", "taper_pct"})

    def __init__(self, asset: AssetConfig, clock: Clock, seed: int) -> None:
        super().__init__(asset, clock, seed)
        energy = self.asset.energy_kwh if self.asset.energy_kwh else 2 * self.capacity_kw
        self.energy_capacity_kwh = float(energy)
        self.min_soc = self.number("min_soc_pct", 5.0, 0.0, 100.0)
        self.max_soc = self.number("max_soc_pct", 100.0, 0.0, 100.0)
        self.taper = self.number("taper_pct", 5.0, 0.0, 100.0)
        soc = self.number("initial_soc_pct", 50.0, 0.0, 100.0)
        if self.min_soc > self.max_soc:
            raise SimParamError(
                f"asset {self.asset.asset_id}: need simulator.min_soc_pct <= max_soc_pct"
            )
        # It may start outside [reserve, top]: then it only moves back toward the range.
        self.energy_kwh = self.energy_capacity_kwh * soc / 100
        self._last: datetime = self._clock.now()

    @property
    def soc_pct(self) -> float:
        return min(max(100 * self.energy_kwh / self.energy_capacity_kwh, 0.0), 100.0)

    def _bounds_kwh(self) -> tuple[float, float, float]:
        e = self.energy_capacity_kwh
        return e * self.min_soc / 100, e * self.max_soc / 100, e * self.taper / 100

    def envelope(self) -> Limits:
        self._integrate()
        lo_e, hi_e, band = self._bounds_kwh()
        discharge = _limit(self.energy_kwh - lo_e, max(self.limits.max_kw, 0.0), band)
        charge = _limit(hi_e - self.energy_kwh, max(-self.limits.min_kw, 0.0), band)
        return self.limits.intersect(Limits(-charge, discharge))

    def _integrate(self) -> None:
        now = self._clock.now()
        dt_h = max((now - self._last).total_seconds(), 0.0) / 3600
        self._last = now
        p = self.limits.clamp(self.setpoint_kw or 0.0)
        lo_e, hi_e, band = self._bounds_kwh()
        if p > 0:
            rate = max(self.limits.max_kw, 0.0)
            self.energy_kwh = lo_e + _approach(self.energy_kwh - lo_e, p, rate, band, dt_h)
        elif p < 0:
            rate = max(-self.limits.min_kw, 0.0)
            self.energy_kwh = hi_e - _approach(hi_e - self.energy_kwh, -p, rate, band, dt_h)

    def measure(self) -> Measurement:
        env = self.envelope()  # integrates up to now
        power = env.clamp(self.setpoint_kw or 0.0)
        return self.reading(power, Status.OK, self.soc_pct)

    def command(self, power_kw: float) -> float:
        self._integrate()  # the old setpoint held until now
        return super().command(power_kw)

    def drop(self) -> None:
        self._integrate()  # the old setpoint held until now; then idle
        super().drop()
