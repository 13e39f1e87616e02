"""Ingest's background tasks kept alive: each runs under a supervisor that restarts it,
with backoff, whenever it stops unexpectedly, and says meanwhile why it is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .logs import log_event
from .metrics import Metrics

log = logging.getLogger("vpp_headend.ingest")  # ingest's events, under its logger

_RESTART_FIRST_S = 1.0  # a stopped task waits this long before its restart, doubling...
_RESTART_MAX_S = 30.0  # ...up to this while it keeps stopping
_HEALTHY_RUN_S = 60.0  # a task that ran this long before it stopped restarts at once again


class Supervisor:
    """Runs tasks ``ingest-<task>`` and restarts each that stops before `stopping` is set."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        #: Set by the owner's stop: a task that returns then is done, not restarted.
        self.stopping = asyncio.Event()
        #: task → why it stopped, until it is restarted (for /ready).
        self.down: dict[str, str] = {}

    async def run(self, task: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``body`` as task ``ingest-<task>`` and restart it, with backoff, each time it
        stops unexpectedly; return when it returns (`stop`)."""
        up = self._metrics.ingest_task_up.labels(task)
        delay = _RESTART_FIRST_S
        while True:
            inner = asyncio.create_task(body(), name=f"ingest-{task}")
            started = time.monotonic()
            up.set(1)
            try:
                await asyncio.wait({inner})
            except asyncio.CancelledError:
                inner.cancel()
                await asyncio.gather(inner, return_exceptions=True)
                raise
            finally:
                up.set(0)
            failure = None if inner.cancelled() else inner.exception()
            if failure is None and not inner.cancelled():
                return
            why = "cancelled" if failure is None else f"{type(failure).__name__}: {failure}"
            if time.monotonic() - started >= _HEALTHY_RUN_S:
                delay = _RESTART_FIRST_S
            self.down[task] = why
            log_event(
                log,
                "ingest_task_stopped",
                level=logging.ERROR,
                exc_info=failure,
                task=task,
                error=why,
                restart_in_s=delay,
            )
            if self.stopping.is_set():
                return  # stopping: a task that fails now would fail the restart too
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()  # a stop restarts at once, to drain
            delay = min(delay * 2, _RESTART_MAX_S)
            del self.down[task]
            self._metrics.ingest_task_restarts.labels(task).inc()
            log_event(log, "ingest_task_restarted", task=task)


__all__ = ["Supervisor"]
