"""Simulated battery: state of charge integrates the applied power over time."""

from __future__ import annotations

from datetime import datetime

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ._sim_common import Measurement, SimDevice, SimParamError, Status, only


class SimBess(SimDevice):
    """A battery holding its setpoint until the state of charge reaches a bound.

    ``E(t + dt) = clamp(E(t) − P·dt, E_min, E_max)`` with ``P`` the power commanded
    (+ discharge). At ``E_min`` it will not discharge, at ``E_max`` it will not charge:
    the reported power is then 0. No setpoint means idle (0 kW).
    """

    kind_params = only({"initial_soc_pct", "min_soc_pct", "max_soc_pct"})

    def __init__(self, asset: AssetConfig, clock: Clock, seed: int) -> None:
        super().__init__(asset, clock, seed)
        energy = self.asset.energy_kwh if self.asset.energy_kwh else 2 * self.capacity_kw
        self.energy_capacity_kwh = float(energy)
        self.min_soc = float(self.param("min_soc_pct", 0.0))
        self.max_soc = float(self.param("max_soc_pct", 100.0))
        soc = float(self.param("initial_soc_pct", 50.0))
        if not 0 <= self.min_soc <= soc <= self.max_soc <= 100:
            raise SimParamError(
                f"asset {self.asset.asset_id}: need 0 <= min_soc_pct <= initial_soc_pct "
                f"<= max_soc_pct <= 100"
            )
        self.energy_kwh = self.energy_capacity_kwh * soc / 100
        self._last: datetime = self._clock.now()

    @property
    def soc_pct(self) -> float:
        return min(max(100 * self.energy_kwh / self.energy_capacity_kwh, 0.0), 100.0)

    def _effective_kw(self) -> float:
        p = self.setpoint_kw or 0.0
        e_min = self.energy_capacity_kwh * self.min_soc / 100
        e_max = self.energy_capacity_kwh * self.max_soc / 100
        if (p > 0 and self.energy_kwh <= e_min + 1e-9) or (
            p < 0 and self.energy_kwh >= e_max - 1e-9
        ):
            return 0.0
        return p

    def _integrate(self) -> None:
        now = self._clock.now()
        dt_h = max((now - self._last).total_seconds(), 0.0) / 3600
        self._last = now
        e_min = self.energy_capacity_kwh * self.min_soc / 100
        e_max = self.energy_capacity_kwh * self.max_soc / 100
        self.energy_kwh = min(max(self.energy_kwh - self._effective_kw() * dt_h, e_min), e_max)

    def measure(self) -> Measurement:
        self._integrate()
        p = self._effective_kw()
        return Measurement(power_kw=p, status=Status.OK, soc_pct=self.soc_pct)

    def command(self, power_kw: float) -> float:
        self._integrate()  # the old setpoint held until now
        self.setpoint_kw = power_kw
        return power_kw
