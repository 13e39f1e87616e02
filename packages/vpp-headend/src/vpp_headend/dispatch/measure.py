"""Delivered power, measured (DESIGN.md §3a): once ``delivery_window_s`` (plus
``delivery_settle_s`` for late readings) has passed since a dispatch was applied, the
mean ``power_kw`` of each targeted asset's readings in ``(applied_at, applied_at +
window]`` (its site's applied time) is stored per asset, and their sum per dispatch;
``vpp_dispatch_tracking_error_kw`` observes delivered − requested (docs/runbook.md §5)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta

from ..db import delivered_repo
from ..db.dispatch_rows import Measured
from .deps import DispatchDeps


def delivered(per_asset: Mapping[str, float | None]) -> float | None:
    """The dispatch's delivered power: the sum of its assets' means, when each has one
    (an asset without a reading in the window leaves the total unknown)."""
    if not per_asset or any(v is None for v in per_asset.values()):
        return None
    return round(math.fsum(v for v in per_asset.values() if v is not None), 9) + 0.0


class DeliveredMeter:
    """Measures what applied dispatches delivered, a batch per run."""

    def __init__(self, deps: DispatchDeps, *, window: timedelta, settle: timedelta) -> None:
        self._engine = deps.engine
        self._read = deps.read
        self._metrics = deps.metrics
        self._window = window
        self._settle = settle
        self._clock = deps.clock

    async def measure(self) -> int:
        """Measure every dispatch that is due. Returns dispatches measured."""
        now = self._clock()
        async with self._read.connect() as conn:
            ids = await delivered_repo.due(conn, now - self._window - self._settle)
        done = 0
        for dispatch_id in ids:
            async with self._engine.begin() as conn:
                requested = await delivered_repo.claim(conn, dispatch_id)
                if requested is None:
                    continue  # another replica has it
                per_asset = await delivered_repo.window_means(conn, dispatch_id, self._window)
                result = Measured(dispatch_id, per_asset, delivered(per_asset), now)
                await delivered_repo.store(conn, result)
            done += 1
            if result.delivered_kw is not None:
                error = result.delivered_kw - requested
                self._metrics.tracking_error.observe(error)
                self._metrics.tracking_error_ratio.observe(abs(error) / max(abs(requested), 1.0))
        return done


__all__ = ["DeliveredMeter", "delivered"]
