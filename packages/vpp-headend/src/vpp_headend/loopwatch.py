"""Event-loop lag: how late the loop runs a callback that was due.

Every gRPC stream, REST request, database reply and timer of a headend runs on one event
loop; when the loop is busy (CPU-bound, or stalled by a GC pause) everything waits
alike. A timer asks to run every ``interval_s``; how late it actually runs is observed
as ``vpp_event_loop_lag_seconds`` — the time any ready work waits for its turn. An
operator reads a slow REST answer next to it: lag high means the process is saturated
(add a replica, docs/scaling.md); lag low means look at the database.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import InfoMetricFamily

from .eventloop import running_loop_name

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _LoopInfo:
    """``vpp_event_loop_info{loop}``: which event loop implementation runs the headend."""

    def __init__(self) -> None:
        self.name = "none"

    def collect(self) -> list[InfoMetricFamily]:
        return [
            InfoMetricFamily(
                "vpp_event_loop", "The event loop the headend runs on", value={"loop": self.name}
            )
        ]


class LoopWatch:
    """Samples the loop's lag with a self-rescheduling timer (no task, no allocation)."""

    def __init__(self, registry: CollectorRegistry, *, interval_s: float = 0.1) -> None:
        self.lag = Histogram(
            "vpp_event_loop_lag_seconds",
            "How late the event loop ran a timer that was due (sampled every "
            f"{interval_s} s): how long any ready work waits for its turn",
            registry=registry,
            buckets=BUCKETS,
        )
        self._info = _LoopInfo()
        registry.register(self._info)
        self._interval = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        """Begin sampling on the running loop."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._info.name = running_loop_name()
        self._schedule()

    def stop(self) -> None:
        """Stop sampling."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        self.lag.observe(max(0.0, self._loop.time() - self._due))
        self._schedule()


__all__ = ["LoopWatch"]
