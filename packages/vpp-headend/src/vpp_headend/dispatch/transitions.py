"""The dispatch state machine as pure functions (DESIGN.md §4, §3b, docs/runbook.md §6).

`advance` takes the dispatch as locked and read in a transaction and returns the
`Transition` to store: the delivery's new row values, the dispatch's (its state follows
its deliveries', `vpp_headend.lifecycle.aggregate`), the events, and the moves to log —
or None when the move would not be progress. Nothing here does I/O.

Shortfall (docs/decisions.md, "Delivered power"): a delivery or dispatch whose devices
took less than asked, by more than ``max(0.5 kW, 0.5 % of |requested|)``, is
``partially_applied`` rather than ``applied``.

Time in force: ``applied`` / ``partially_applied`` are settled but not ended; a delivery
moves on to ``cancelling`` (a cancel asked for its release), then to how its control
ended: ``completed`` (its duration), ``cancelled``, ``released`` (the fail-safe).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from ..db.dispatch_rows import (
    DeliveryChange,
    DeliveryRow,
    DispatchChange,
    EventRow,
    Locked,
    Released,
    Taken,
)
from ..domain import CONTROL_ENDED_STATES, OUTCOME_STATES, SETTLED_STATES, TERMINAL_STATES
from ..lifecycle import advances, aggregate

#: A shortfall within this many kW, or within `TOLERANCE_REL` of the request, is met.
TOLERANCE_KW = 0.5
TOLERANCE_REL = 0.005
# Sums of floats (33.3 + 33.3 + 33.4) are rounded to this many decimals (1 µW):
# float noise is not a shortfall.
_DECIMALS = 9
# Ended by delivery: what was taken is worked out with them.
_TAKEN_STATES = TERMINAL_STATES - CONTROL_ENDED_STATES


def falls_short(shortfall_kw: float, requested_kw: float) -> bool:
    """True when ``shortfall_kw`` is beyond the tolerance for ``requested_kw``."""
    return abs(shortfall_kw) > max(TOLERANCE_KW, TOLERANCE_REL * abs(requested_kw))


def taken(requested_kw: float, allocated_kw: float) -> Taken:
    """What was taken of ``requested_kw`` and the signed gap (0.0 when exactly met)."""
    allocated = round(allocated_kw, _DECIMALS) + 0.0  # + 0.0: no -0.0
    return Taken(allocated, round(requested_kw - allocated, _DECIMALS) + 0.0)


@dataclass(frozen=True, slots=True)
class Move:
    """One state change, for its ``event=dispatch_transition`` log line."""

    dispatch_id: UUID
    scope: str  # site | dispatch
    old: str
    new: str
    site_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """One delivery's move and what follows from it, to be written in one statement."""

    dispatch_id: UUID
    delivery: DeliveryChange
    dispatch: DispatchChange | None
    events: tuple[EventRow, ...]
    moves: tuple[Move, ...]

    def applied_to(self, locked: Locked) -> Locked:
        """``locked`` as it reads once this transition is stored (for a next move in the
        same transaction)."""
        dlv = locked.deliveries[self.delivery.site_id]
        took = self.delivery.taken
        dlv = replace(
            dlv,
            state=self.delivery.state,
            allocated_kw=took.allocated_kw if took is not None else dlv.allocated_kw,
        )
        dispatch = locked.dispatch
        if self.dispatch is not None:
            dispatch = replace(dispatch, state=self.dispatch.state)
        return replace(
            locked, dispatch=dispatch, deliveries={**locked.deliveries, dlv.site_id: dlv}
        )

    @property
    def final(self) -> str | None:
        """The outcome the dispatch reached with this move, if it did: settled (applied,
        partially applied) or ended (`OUTCOME_STATES`), for ``vpp_dispatches_final``."""
        if self.dispatch is not None and self.dispatch.state in OUTCOME_STATES:
            return self.dispatch.state
        return None


def advance(
    locked: Locked,
    site_id: str,
    state: str,
    now: datetime,
    *,
    reason: str | None = None,
    detail: str | None = None,
    sent: tuple[datetime, int] | None = None,
    took: Taken | None = None,
    released: Released | None = None,
    in_force_until: datetime | None = None,
) -> Transition | None:
    """Move the delivery to ``site_id`` to ``state`` and the dispatch with it; None when
    that is not progress. ``applied`` becomes ``partially_applied`` when ``took`` falls
    short of the delivery's share. Entering ``cancelling`` records when the release was
    asked; ``released`` (a RELEASED ack) goes with an end of control."""
    dispatch_id = locked.dispatch.dispatch_id
    dlv = locked.deliveries.get(site_id)
    if dlv is None:
        return None
    if state == "applied" and took is not None and falls_short(took.shortfall_kw, dlv.power_kw):
        state = "partially_applied"
    if not advances(dlv.state, state):
        return None
    applied_at = now if state in SETTLED_STATES else None
    change = DeliveryChange(
        site_id,
        state,
        now,
        reason,
        sent,
        took,
        applied_at,
        release_requested_at=now if state == "cancelling" else None,
        released=released if state in CONTROL_ENDED_STATES else None,
        in_force_until=in_force_until if state in SETTLED_STATES else None,
    )
    events = [EventRow(dispatch_id, now, state, "site", site_id, reason or detail)]
    moves = [Move(dispatch_id, "site", dlv.state, state, site_id, reason)]
    moved = replace(
        dlv, state=state, allocated_kw=took.allocated_kw if took is not None else dlv.allocated_kw
    )
    after = {**locked.deliveries, site_id: moved}
    new, total = dispatch_outcome(locked.dispatch.power_kw, after.values())
    dispatch_change = None
    if new != locked.dispatch.state:
        # applied_at is when the dispatch first settled: the measurement window's start.
        settled_now = new in SETTLED_STATES and locked.dispatch.state not in SETTLED_STATES
        dispatch_change = DispatchChange(new, now, total, now if settled_now else None)
        events.append(EventRow(dispatch_id, now, new, "dispatch"))
        moves.append(Move(dispatch_id, "dispatch", locked.dispatch.state, new))
    return Transition(dispatch_id, change, dispatch_change, tuple(events), tuple(moves))


def dispatch_outcome(
    requested_kw: float, deliveries: Iterable[DeliveryRow]
) -> tuple[str, Taken | None]:
    """The dispatch's state from its deliveries', and once settled or ended by delivery
    what was taken.

    Taken: the sum of what each delivery's devices took (a settled delivery with no
    figure counts its share: an older gateway acked it without one); None when nothing
    was taken or reported, and for a state that only says how control went on or ended
    (cancelling, completed, cancelled, released): what was taken stays as it was stored.
    ``applied`` becomes ``partially_applied`` when that sum falls short of
    ``requested_kw`` (the group split itself may not have placed it all).
    """
    rows = list(deliveries)
    state = aggregate(d.state for d in rows)
    if state not in SETTLED_STATES and state not in _TAKEN_STATES:
        return state, None
    counted = [d for d in rows if d.state in SETTLED_STATES or d.allocated_kw is not None]
    if not counted:
        return state, None
    allocated = math.fsum(
        d.allocated_kw if d.allocated_kw is not None else d.power_kw for d in counted
    )
    total = taken(requested_kw, allocated)
    if state == "applied" and falls_short(total.shortfall_kw, requested_kw):
        state = "partially_applied"
    return state, total


__all__ = [
    "TOLERANCE_KW",
    "TOLERANCE_REL",
    "Move",
    "Transition",
    "advance",
    "dispatch_outcome",
    "falls_short",
    "taken",
]
