"""The operator's cancel (``POST /dispatch/{id}/cancel``, DESIGN.md §3b) as a pure decision
on the locked dispatch, and its one write.

Per delivery: ``pending`` → ``cancelled`` (never delivered: the reconnect and NOTIFY paths
deliver only pending ones); ``sent``, ``received``, ``applied``, ``partially_applied`` →
``cancelling`` (its release is asked for; a Release goes to the site's gateway, and its
RELEASED ack ends the delivery ``cancelled``); ended ones stay as they are. A dispatch
asked before answers the same (`CancelRepeated`); an ended one is refused
(`CancelRefused`, 409).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import release_repo
from ..db._sql import Writes
from ..db.dispatch_rows import EventRow, Locked, TargetRow
from ..db.notify_repo import notify_release
from ..domain import IN_FLIGHT_STATES, SETTLED_STATES, TERMINAL_STATES
from .effects import write
from .transitions import Transition, advance

#: What a gateway is told (and what stays in its log) when a cancel releases a setpoint.
RELEASE_REASON = "cancelled by operator"


@dataclass(frozen=True, slots=True)
class Cancel:
    """What a first cancel changes."""

    transitions: tuple[Transition, ...]  # in order, each on the one before
    targets: tuple[TargetRow, ...]  # per-asset rows of deliveries cancelled at once
    events: tuple[EventRow, ...]  # their per-asset transitions
    releasing: tuple[str, ...]  # sites whose gateway gets a Release


@dataclass(frozen=True, slots=True)
class CancelRepeated:
    """A cancel was asked before: nothing changes, the answer is the same."""


@dataclass(frozen=True, slots=True)
class CancelRefused:
    """The dispatch has ended (``state``): nothing is left to cancel."""

    state: str


CancelOutcome = Cancel | CancelRepeated | CancelRefused


def release_text(reason: str | None) -> str:
    """The Release's reason: the operator's words, when given."""
    return f"{RELEASE_REASON}: {reason}" if reason else RELEASE_REASON


def decide(locked: Locked, now: datetime, reason: str | None) -> CancelOutcome:
    """What cancelling the dispatch as locked does at ``now``."""
    dispatch = locked.dispatch
    if dispatch.cancel_requested_at is not None:
        return CancelRepeated()
    if dispatch.state in TERMINAL_STATES:
        return CancelRefused(dispatch.state)
    words = f": {reason}" if reason else ""
    transitions: list[Transition] = []
    releasing: list[str] = []
    cancelled: list[str] = []
    for site_id in sorted(locked.deliveries):
        state = locked.deliveries[site_id].state
        if state == "pending":
            why = f"cancelled by operator before delivery{words}"
            t = advance(locked, site_id, "cancelled", now, reason=why)
            cancelled.append(site_id)
        elif state in IN_FLIGHT_STATES or state in SETTLED_STATES:
            why = f"cancel requested by operator{words}; a release goes to the gateway"
            t = advance(locked, site_id, "cancelling", now, reason=why)
            releasing.append(site_id)
        else:
            continue
        if t is not None:
            transitions.append(t)
            locked = t.applied_to(locked)
    targets, events = _cancelled_targets(locked, cancelled, now, words)
    return Cancel(tuple(transitions), targets, events, tuple(releasing))


def _cancelled_targets(
    locked: Locked, sites: list[str], now: datetime, words: str
) -> tuple[tuple[TargetRow, ...], tuple[EventRow, ...]]:
    """Per-asset rows of deliveries cancelled before delivery end with them."""
    why = f"cancelled by operator before delivery{words}"
    rows: list[TargetRow] = []
    events: list[EventRow] = []
    for asset_id, row in locked.targets.items():
        if row.site_id in sites and row.state not in TERMINAL_STATES:
            rows.append(replace(row, state="cancelled", reason=why, updated_at=now))
            events.append(
                EventRow(locked.dispatch.dispatch_id, now, "cancelled", "asset", asset_id, why)
            )
    return tuple(rows), tuple(events)


async def store(
    conn: AsyncConnection, locked: Locked, cancel: Cancel, now: datetime, reason: str | None
) -> None:
    """Write a first cancel: the request on the dispatch, each delivery's move with its
    events, and — when a release is on its way — a NOTIFY for the replica holding the
    site's stream (`vpp_headend.notify`)."""
    dispatch_id = locked.dispatch.dispatch_id
    moves: list[Transition | None] = list(cancel.transitions) or [None]
    for i, t in enumerate(moves):
        first = i == 0
        await write(
            conn,
            t,
            targets=cancel.targets if first else (),
            events=cancel.events if first else (),
        )
    writes = Writes()
    writes.add(release_repo.cancel_update(dispatch_id, now, reason))
    await writes.run(conn)
    if cancel.releasing:
        await notify_release(conn, dispatch_id)


__all__ = [
    "RELEASE_REASON",
    "Cancel",
    "CancelOutcome",
    "CancelRefused",
    "CancelRepeated",
    "decide",
    "release_text",
    "store",
]
