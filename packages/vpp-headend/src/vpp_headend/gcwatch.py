"""Garbage-collector pauses: kept short, measured, exported and logged.

The policy, while a headend runs (process-wide; the last headend to stop restores it):

* young collections on a clock, every ``freeze_interval_s`` (0.1 s), each followed by a
  freeze (`gc.freeze`) of its survivors, so a walk sees only what the last tick made;
* the threshold-driven young collection stays as a safety net at ``young_threshold``
  allocations (a burst between ticks);
* every ``full_interval_s`` (6 h) everything is unfrozen and collected once, reclaiming
  cyclic garbage of objects frozen while alive; that pause walks the whole live set and
  is logged.

Why: with thousands of streams CPython's own thresholds gave pauses of 0.1-1.6 s that set
the p99 of telemetry lag and dispatch (docs/scaling.md, "Why the hot path looks as it
does"). Pauses are exported as ``vpp_gc_pause_seconds{generation}``; long ones are logged,
so an operator can tell a GC stall from a slow database.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from .logs import log_event

log = logging.getLogger(__name__)

_installed = 0  # headends in this process with the policy on
_saved_threshold: tuple[int, int, int] | None = None


class GcWatch:
    """Times every collection through `gc.callbacks`; applies the pause policy."""

    def __init__(self, registry: CollectorRegistry, *, log_over_s: float = 0.1) -> None:
        self.pauses = Histogram(
            "vpp_gc_pause_seconds",
            "Garbage-collector pauses of the headend process, by generation",
            ["generation"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self._log_over = log_over_s
        self._started = 0.0
        self._on = False

    def install(self, young_threshold: int) -> None:
        """Time collections and raise the young-generation threshold."""
        global _installed, _saved_threshold
        if self._on:
            return
        self._on = True
        gc.callbacks.append(self._callback)
        if _installed == 0:
            _saved_threshold = gc.get_threshold()
        _installed += 1
        _, t1, t2 = gc.get_threshold()
        gc.set_threshold(max(young_threshold, gc.get_threshold()[0]), t1, t2)

    def uninstall(self) -> None:
        """Stop timing; the last headend restores the thresholds and unfreezes."""
        global _installed, _saved_threshold
        if not self._on:
            return
        self._on = False
        gc.callbacks.remove(self._callback)
        _installed -= 1
        if _installed == 0:
            gc.unfreeze()
            if _saved_threshold is not None:
                gc.set_threshold(*_saved_threshold)
            _saved_threshold = None

    async def run(self, freeze_interval_s: float, full_interval_s: float) -> None:
        """Every ``freeze_interval_s`` a young collection, then its survivors frozen; a
        full collection every ``full_interval_s``."""
        # Everything that exists once the headend is up (modules, the app, the pool) lives
        # as long as the process: collect once and freeze it now.
        self.full_collection()
        gc.freeze()
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(freeze_interval_s)
            if time.monotonic() - last_full >= full_interval_s:
                last_full = time.monotonic()
                self.full_collection()
            else:
                gc.collect(0)
            gc.freeze()

    def full_collection(self) -> float:
        """Unfreeze everything and collect it once; returns the pause (logged)."""
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        pause = time.perf_counter() - started
        log_event(log, "gc_full_collection", pause_s=round(pause, 3), collected=collected)
        return pause

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info.get("generation", 0)
        self.pauses.labels(str(generation)).observe(pause)
        if pause >= self._log_over:
            log_event(
                log,
                "gc_pause",
                level=logging.WARNING,
                generation=generation,
                pause_s=round(pause, 3),
                collected=info.get("collected"),
            )


__all__ = ["GcWatch"]
