"""Storing a `Transition`, and what runs once its transaction committed: the
``dispatch_transition`` log lines and the final-state counter."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import dispatch_repo as repo
from ..db._sql import Writes
from ..db.dispatch_rows import EventRow, TargetRow
from ..logs import log_event
from ..metrics import Metrics
from .transitions import Move, Transition, advance

log = logging.getLogger("vpp_headend.dispatch")


class AfterCommit:
    """Side effects to run once a transaction committed (metrics, logs, sends)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._actions: list[Callable[[], None]] = []

    def add(self, fn: Callable[[], None]) -> None:
        self._actions.append(fn)

    def moved(self, moves: Sequence[Move], final: str | None = None) -> None:
        """Log ``moves``; count the dispatch if it reached the terminal state ``final``."""
        for m in moves:
            self.add(_transition_log(m))
        if final is not None:
            counter = self._metrics.dispatches_final.labels(final)
            self.add(counter.inc)

    def transition(self, t: Transition) -> None:
        self.moved(t.moves, t.final)

    def run(self) -> None:
        actions, self._actions = self._actions, []
        for fn in actions:
            fn()


def _transition_log(m: Move) -> Callable[[], None]:
    line: dict[str, Any] = {"dispatch_id": m.dispatch_id, "scope": m.scope}
    if m.site_id is not None:
        line["site_id"] = m.site_id
        line["reason"] = m.reason
    line["from"], line["to"] = m.old, m.new
    return lambda: log_event(log, "dispatch_transition", **line)


async def write(
    conn: AsyncConnection,
    t: Transition | None,
    *,
    targets: Sequence[TargetRow] = (),
    events: Sequence[EventRow] = (),
) -> None:
    """Store a transition with per-asset rows and events: one statement for all."""
    writes = Writes()
    all_events = list(events)
    if t is not None:
        writes.add(repo.delivery_update(t.dispatch_id, t.delivery))
        if t.dispatch is not None:
            writes.add(repo.dispatch_update(t.dispatch_id, t.dispatch))
        all_events += t.events
    if targets:
        writes.add(repo.targets_upsert(targets))
    if all_events:
        writes.add(repo.events_insert(all_events))
    await writes.run(conn)


async def move(
    conn: AsyncConnection,
    dispatch_id: UUID,
    site_id: str,
    state: str,
    now: datetime,
    after: AfterCommit,
    *,
    reason: str | None = None,
    detail: str | None = None,
) -> bool:
    """Lock the dispatch, move one delivery forward and the dispatch with it. False when
    it would not be progress (or the dispatch is gone)."""
    locked = await repo.lock_with_deliveries(conn, dispatch_id)
    if locked is None:
        return False
    t = advance(locked, site_id, state, now, reason=reason, detail=detail)
    if t is None:
        return False
    await write(conn, t)
    after.transition(t)
    return True


__all__ = ["AfterCommit", "move", "write"]
