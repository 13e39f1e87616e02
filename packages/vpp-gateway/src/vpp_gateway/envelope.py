"""The live operating envelope a reading carries (DESIGN.md §3a), from a device measurement.

What the device reports narrowed by the asset's static limits; the static limits and the
site file's ``min_stable_kw`` where the device cannot tell. An unreachable or faulty
device can be set to nothing: [0, 0]. A meter takes no setpoints: no envelope at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vpp_protocol.sitefile import AssetConfig

from .devices import Limits, Measurement
from .model import Status


@dataclass(frozen=True, slots=True)
class Envelope:
    """Live range in kW (signed) and minimum stable load; None where unknown or unbounded."""

    min_kw: float | None = None
    max_kw: float | None = None
    min_stable_kw: float | None = None


NONE = Envelope()
NOTHING = Envelope(0.0, 0.0)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _live(static: Limits, m: Measurement) -> Limits:
    """The device's range within the static limits; the static limits where it is silent.

    A device reporting nonsense (NaN, min above max) is treated as silent.
    """
    lo = static.min_kw if m.available_min_kw is None else m.available_min_kw
    hi = static.max_kw if m.available_max_kw is None else m.available_max_kw
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        return static
    return static.intersect(Limits(lo, hi))


def envelope(config: AssetConfig, static: Limits, m: Measurement) -> Envelope:
    """The envelope to report for one asset's measurement ``m``."""
    if not config.dispatchable:
        return NONE
    if m.status in (Status.OFFLINE, Status.FAULT):
        return NOTHING
    live = _live(static, m)
    stable = m.min_stable_kw if m.min_stable_kw is not None else config.min_stable_kw
    return Envelope(
        _finite(live.min_kw),
        _finite(live.max_kw),
        stable if math.isfinite(stable) and stable > 0 else None,
    )


__all__ = ["NONE", "NOTHING", "Envelope", "envelope"]
