"""Acks the database could not take right now (an outage, a killed connection, a pool
timeout), retried in the background until it can.

A gateway sends each ack once; losing one to a database blip would leave its dispatch
short of its final state although the device did what it was told. So an ack that
meets `DB_UNAVAILABLE` waits here, in arrival order, and is retried with capped
exponential backoff while the stream goes on reading telemetry. One worker task, owned
by `DispatchService` (started and stopped with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .db.engine import DB_UNAVAILABLE
from .domain import Ack
from .logs import log_event
from .sessions import Session

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Waiting:
    session: Session
    ack: Ack
    attempts: int = 1  # the first one failed before the ack came here


class AckRetry:
    """Applies acks through ``apply``; those the database refuses wait and are retried."""

    def __init__(
        self,
        apply: Callable[[Session, Ack], Awaitable[object]],
        *,
        first_delay_s: float = 0.05,
        max_delay_s: float = 5.0,
        max_waiting: int = 100_000,
    ) -> None:
        self._apply = apply
        self._first_delay = first_delay_s
        self._max_delay = max_delay_s
        self._max_waiting = max_waiting  # memory bound for a very long outage
        self._queue: deque[_Waiting] = deque()
        self._per_site: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Acks waiting for the database."""
        return len(self._queue)

    async def start(self) -> None:
        """Start the retry worker."""
        self._task = asyncio.create_task(self._run(), name="ack-retry")

    async def stop(self) -> None:
        """Stop the worker; acks still waiting are logged (their deliveries stay in flight:
        re-delivered on the site's next session, or ended by the sweeper)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue:
            log_event(
                log,
                "ack_retry_abandoned",
                level=logging.WARNING,
                acks=len(self._queue),
                setpoint_ids=[w.ack.setpoint_id for w in list(self._queue)[:10]],
            )

    async def handle(self, session: Session, ack: Ack) -> None:
        """Apply ``ack`` now or, while the database cannot take it, later.

        An ack of a site whose earlier acks still wait goes behind them: that site's
        acks are applied in the order it sent them, and a failing database is not asked
        again for each new one. Errors other than `DB_UNAVAILABLE` reach the caller.
        """
        if self._per_site[session.site_id]:
            self._enqueue(_Waiting(session, ack, attempts=0), None)
            return
        try:
            await self._apply(session, ack)
        except DB_UNAVAILABLE as exc:
            self._enqueue(_Waiting(session, ack), exc)

    def _enqueue(self, item: _Waiting, error: Exception | None) -> None:
        if len(self._queue) >= self._max_waiting:
            gone = self._pop()
            log_event(
                log,
                "ack_retry_overflow",
                level=logging.ERROR,
                site_id=gone.session.site_id,
                setpoint_id=gone.ack.setpoint_id,
                state=gone.ack.state,
                limit=self._max_waiting,
                detail="oldest waiting ack dropped; its delivery is re-sent on reconnect "
                "or ended by the sweeper",
            )
        self._queue.append(item)
        self._per_site[item.session.site_id] += 1
        self._wake.set()
        log_event(
            log,
            "ack_retry_queued",
            level=logging.WARNING,
            site_id=item.session.site_id,
            setpoint_id=item.ack.setpoint_id,
            state=item.ack.state,
            waiting=len(self._queue),
            error=_brief(error) if error is not None else "earlier acks of this site wait",
        )

    def _pop(self) -> _Waiting:
        item = self._queue.popleft()
        self._per_site[item.session.site_id] -= 1
        if not self._per_site[item.session.site_id]:
            del self._per_site[item.session.site_id]
        return item

    async def _run(self) -> None:
        delay = self._first_delay
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                await asyncio.sleep(self._first_delay)  # the pool replaces dead connections
            head = self._queue[0]
            head.attempts += 1
            try:
                await self._apply(head.session, head.ack)
            except DB_UNAVAILABLE as exc:
                log_event(
                    log,
                    "ack_retry_failed",
                    level=logging.WARNING,
                    setpoint_id=head.ack.setpoint_id,
                    attempts=head.attempts,
                    waiting=len(self._queue),
                    next_try_s=delay,
                    error=_brief(exc),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay)
                continue
            except Exception:  # this ack cannot be applied at all: keep the others going
                log.exception(
                    "event=ack_dropped site_id=%s setpoint_id=%s",
                    head.session.site_id,
                    head.ack.setpoint_id,
                )
            else:
                log_event(
                    log,
                    "ack_retried",
                    site_id=head.session.site_id,
                    setpoint_id=head.ack.setpoint_id,
                    state=head.ack.state,
                    attempts=head.attempts,
                )
            self._pop()
            delay = self._first_delay


def _brief(exc: Exception) -> str:
    """First line of a database error (SQLAlchemy appends the statement and a link)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


__all__ = ["AckRetry"]
