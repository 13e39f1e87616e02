"""Simulated generator set: off, or running between its minimum stable load and its maximum."""

from __future__ import annotations

from ._sim_common import Measurement, SimDevice, Status, only


class SimGenset(SimDevice):
    """A setpoint ≤ 0 stops it; a setpoint in (0, min stable load) runs it at the minimum.

    The minimum stable load is ``min_stable_kw``, else ``min_stable_pct`` (default 30 %)
    of capacity.
    """

    kind_params = only({"min_stable_kw", "min_stable_pct"})

    @property
    def min_stable_kw(self) -> float:
        if "min_stable_kw" in self._params:
            value = float(self.param("min_stable_kw", 0.0))
        else:
            value = float(self.param("min_stable_pct", 30.0)) / 100 * self.capacity_kw
        return min(max(value, 0.0), self.limits.max_kw)

    def command(self, power_kw: float) -> float:
        if power_kw <= 0:
            applied = 0.0 if self.limits.min_kw <= 0 else self.limits.min_kw
        else:
            applied = max(power_kw, self.min_stable_kw)
        self.setpoint_kw = self.limits.clamp(applied)
        return self.setpoint_kw

    def measure(self) -> Measurement:
        p = self.setpoint_kw or 0.0
        return Measurement(power_kw=p, status=Status.OK if p > 0 else Status.STANDBY)
