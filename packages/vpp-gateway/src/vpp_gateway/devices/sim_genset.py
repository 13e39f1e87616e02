"""Simulated generator set: off, or running between its minimum stable load and its maximum."""

from __future__ import annotations

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ._sim_common import Measurement, SimDevice, SimParamError, Status

_MOVED = {
    "min_stable_pct": "the asset's own min_stable_kw (kW, in the site file; default 0)",
    "min_stable_kw": "the asset's own min_stable_kw (beside kind and capacity_kw, not under "
    "simulator:)",
}


class SimGenset(SimDevice):
    """Off at a setpoint ≤ 0; a setpoint in (0, min stable load) runs it at the minimum.

    The minimum stable load is the site file's ``min_stable_kw`` (default 0: continuous)
    and shows in every reading's envelope; the simulator has no minimum of its own.
    """

    def __init__(self, asset: AssetConfig, clock: Clock, seed: int) -> None:
        moved = sorted(set(asset.simulator) & set(_MOVED))
        if moved:
            name = moved[0]
            raise SimParamError(
                f"asset {asset.asset_id}: simulator.{name} is no longer supported; "
                f"set {_MOVED[name]}"
            )
        super().__init__(asset, clock, seed)

    @property
    def min_stable_kw(self) -> float:
        return min(max(self.asset.min_stable_kw, 0.0), self.limits.max_kw)

    def min_stable(self) -> float | None:
        return self.min_stable_kw or None

    def command(self, power_kw: float) -> float:
        if power_kw <= 0:
            applied = 0.0 if self.limits.min_kw <= 0 else self.limits.min_kw
        else:
            applied = max(power_kw, self.min_stable_kw)
        self.setpoint_kw = self.limits.clamp(applied)
        return self.setpoint_kw

    def measure(self) -> Measurement:
        p = self.setpoint_kw or 0.0
        return self.reading(p, Status.OK if p > 0 else Status.STANDBY)
