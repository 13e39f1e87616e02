"""A gateway's ack as a pure decision: what it changes (`AckApplied`) or why it changes
nothing (`AckIgnored`). The service writes the one and counts the other.

RELEASED (DESIGN.md §3b) ends a delivery by its cause: DURATION_ENDED → ``completed``,
CANCELLED → ``cancelled``, FAILSAFE → ``released``; once the operator asked for a cancel,
any RELEASED ends it ``cancelled`` (the reason keeps the cause). Each allocation of a
RELEASED ack is an asset the gateway released; with none, nothing was in force any more
(superseded on site, never applied), and the delivery ends all the same. A RELEASED for
a delivery still ``sent`` or ``received`` (its APPLIED ack was lost, or a release raced
the setpoint) ends it too: forward is forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal
from uuid import UUID

from ..db.dispatch_rows import EventRow, Locked, Released, Taken, TargetRow
from ..domain import TERMINAL_STATES, Ack, Allocation, ReleaseCauseName
from ..lifecycle import advances
from .transitions import Transition, advance, taken

IgnoredWhy = Literal["unknown_setpoint", "repeat"]
# Acks that end a setpoint's delivery (the ack latency is measured up to one of them).
_FINAL_ACKS = frozenset({"applied", "failed", "rejected", "expired"})
_CAUSE_TEXT: dict[ReleaseCauseName | None, str] = {
    "duration_ended": "duration ended",
    "cancelled": "cancelled",
    "failsafe": "fail-safe: the gateway had no working session for failsafe_after_s",
    None: "released by the gateway (no cause given)",
}
_RELEASED = "the gateway released the assets to their fallback"
_NOTHING = "nothing was left to release (taken over by a newer setpoint, or never applied)"
_NOT_RELEASED = "not in force under this setpoint any more (taken over, or never applied)"


@dataclass(frozen=True, slots=True)
class AckApplied:
    """The ack moved something: the delivery (``transition``), per-asset rows, or both."""

    transition: Transition | None
    targets: tuple[TargetRow, ...]
    events: tuple[EventRow, ...]  # per-asset transitions
    foreign: tuple[str, ...]  # allocations naming assets the session does not serve
    sent_at: datetime | None  # of a delivery this ack ended (for the ack latency)


@dataclass(frozen=True, slots=True)
class AckIgnored:
    """The ack changed nothing, and why."""

    why: IgnoredWhy
    foreign: tuple[str, ...] = ()


AckOutcome = AckApplied | AckIgnored


def apply_ack(
    locked: Locked | None, site_id: str, served: frozenset[str], ack: Ack, now: datetime
) -> AckOutcome:
    """What ``ack`` from the session of ``site_id`` (serving ``served``) does to the
    dispatch as locked; idempotent (a repeat or a backwards move is `AckIgnored`)."""
    dlv = locked.deliveries.get(site_id) if locked is not None else None
    if locked is None or dlv is None:
        return AckIgnored("unknown_setpoint")
    # A site reports only on assets its session serves: an allocation naming another
    # site's asset is refused and logged, never stored under that asset.
    foreign = tuple(sorted({a.asset_id for a in ack.allocations if a.asset_id not in served}))
    allocations = [a for a in ack.allocations if a.asset_id in served]
    if ack.state == "released":
        return _released(locked, site_id, served, ack, allocations, foreign, now)
    rows, events = _target_rows(locked, site_id, served, ack, allocations, now)
    took = took_from(ack, dlv.power_kw, allocations)
    moved = advance(
        locked,
        site_id,
        ack.state,
        now,
        reason=ack.reason or None,
        took=took,
        in_force_until=ack.ends_at if ack.state == "applied" else None,
    )
    if moved is None and not rows:
        return AckIgnored("repeat", foreign)
    ended = moved is not None and ack.state in _FINAL_ACKS
    return AckApplied(moved, rows, events, foreign, dlv.sent_at if ended else None)


def release_state(cause: ReleaseCauseName | None, cancel_requested: bool) -> str:
    """The state a RELEASED ack ends a delivery in."""
    if cancel_requested or cause == "cancelled":
        return "cancelled"
    return "completed" if cause == "duration_ended" else "released"


def release_reason(ack: Ack, cancel_requested: bool, released_any: bool) -> str:
    """What the delivery's reason says of a RELEASED ack: its cause (kept when a cancel
    turns it into ``cancelled``), whether anything was released, the gateway's words."""
    text = f"{_CAUSE_TEXT[ack.release_cause]}; {_RELEASED if released_any else _NOTHING}"
    if cancel_requested and ack.release_cause != "cancelled":
        text = f"cancelled; before the release reached it: {text}"
    return f"{text} (gateway: {ack.reason})" if ack.reason else text


def _released(
    locked: Locked,
    site_id: str,
    served: frozenset[str],
    ack: Ack,
    allocations: Sequence[Allocation],
    foreign: tuple[str, ...],
    now: datetime,
) -> AckOutcome:
    """A RELEASED ack: the delivery ends, and with it every per-asset row of its site."""
    cancel = locked.dispatch.cancel_requested_at is not None
    end = release_state(ack.release_cause, cancel)
    reason = release_reason(ack, cancel, bool(allocations))
    # When the gateway released (its clock, like the readings'); ours if it is ahead.
    at = ack.ts if ack.ts is not None and ack.ts <= now else now
    moved = advance(
        locked, site_id, end, now, reason=reason, released=Released(at, ack.release_cause)
    )
    if moved is None:
        return AckIgnored("repeat", foreign)
    rows, events = _released_rows(locked, site_id, served, allocations, end, reason, now)
    return AckApplied(moved, rows, events, foreign, None)


def _released_rows(
    locked: Locked,
    site_id: str,
    served: frozenset[str],
    allocations: Sequence[Allocation],
    end: str,
    reason: str,
    now: datetime,
) -> tuple[tuple[TargetRow, ...], tuple[EventRow, ...]]:
    """The site's per-asset rows in ``end``: those named in the ack were released (the
    reason says how); the others were no longer under this setpoint."""
    dispatch = locked.dispatch
    released = {a.asset_id for a in allocations}
    subjects = [a for a, row in locked.targets.items() if row.site_id == site_id]
    subjects += [a.asset_id for a in allocations]
    if dispatch.target_kind == "asset" and dispatch.target_id in served:
        subjects.append(dispatch.target_id)
    rows: list[TargetRow] = []
    events: list[EventRow] = []
    for asset_id in dict.fromkeys(subjects):
        cur = locked.targets.get(asset_id)
        if cur is not None and cur.state in TERMINAL_STATES:
            continue
        base = cur if cur is not None else _new_target(dispatch.dispatch_id, asset_id, now)
        why = reason if asset_id in released else _NOT_RELEASED
        rows.append(replace(base, site_id=site_id, state=end, reason=why, updated_at=now))
        events.append(EventRow(dispatch.dispatch_id, now, end, "asset", asset_id, why))
    return tuple(rows), tuple(events)


def took_from(ack: Ack, share_kw: float, allocations: Sequence[Allocation]) -> Taken | None:
    """What the site's devices took of ``share_kw``, for an APPLIED or FAILED ack.

    Per allocation its ``applied_kw``; one without it counts 0 when a limit reason says
    why (it did not confirm), else its allocation (an older gateway reports no applied
    power). Without allocations: the ack's ``applied_kw``, else the share less its
    ``shortfall_kw``, else (APPLIED from an older gateway) the whole share.
    """
    if ack.state not in ("applied", "failed"):
        return None
    allocated: float | None
    if allocations:
        if ack.state == "failed" and all(a.applied_kw is None for a in allocations):
            return None
        allocated = math.fsum(_applied(a) for a in allocations)
    elif ack.applied_kw is not None:
        allocated = ack.applied_kw
    elif ack.shortfall_kw is not None:
        allocated = share_kw - ack.shortfall_kw
    else:
        allocated = share_kw if ack.state == "applied" else None
    return None if allocated is None else taken(share_kw, allocated)


def _applied(a: Allocation) -> float:
    if a.applied_kw is not None:
        return a.applied_kw
    return 0.0 if a.limit_reason is not None else a.power_kw


def _target_rows(
    locked: Locked,
    site_id: str,
    served: frozenset[str],
    ack: Ack,
    allocations: Sequence[Allocation],
    now: datetime,
) -> tuple[tuple[TargetRow, ...], tuple[EventRow, ...]]:
    """Per-asset bookkeeping: allocations and ack states (forward only) as whole rows to
    upsert, and the per-asset transitions."""
    dispatch = locked.dispatch
    by_asset = {a.asset_id: a for a in allocations}
    if dispatch.target_kind == "asset":
        subjects = [dispatch.target_id]
    else:
        subjects = [a.asset_id for a in allocations]
        if ack.asset_id and ack.asset_id in served:
            subjects.append(ack.asset_id)
    rows: list[TargetRow] = []
    events: list[EventRow] = []
    for asset_id in dict.fromkeys(subjects):
        cur = locked.targets.get(asset_id)
        base = cur if cur is not None else _new_target(dispatch.dispatch_id, asset_id, now)
        alloc = by_asset.get(asset_id)
        row = replace(base, site_id=site_id)
        if alloc is not None:
            row = replace(row, allocation_kw=alloc.power_kw)
        if cur is None or advances(cur.state, ack.state):
            own = dispatch.target_kind == "asset" or asset_id == ack.asset_id
            row = _acked(row, ack, alloc, own)
            events.append(
                EventRow(
                    dispatch.dispatch_id, now, ack.state, "asset", asset_id, ack.reason or None
                )
            )
        if cur is not None and row == cur:
            continue
        rows.append(replace(row, updated_at=now))
    return tuple(rows), tuple(events)


def _acked(row: TargetRow, ack: Ack, alloc: Allocation | None, own: bool) -> TargetRow:
    """``row`` moved to the ack's state, with what the ack says of this asset (``own``:
    the ack is about this very asset, not only through an allocation)."""
    applied, limit, detail = row.applied_kw, row.limit_reason, row.limit_detail
    if alloc is not None and (alloc.applied_kw is not None or alloc.limit_reason is not None):
        applied, limit, detail = alloc.applied_kw, alloc.limit_reason, alloc.limit_detail or None
    if own and ack.applied_kw is not None:
        applied = ack.applied_kw
    if own and ack.limit_reason is not None:
        limit, detail = ack.limit_reason, ack.limit_detail or None
    return replace(
        row,
        state=ack.state,
        reason=ack.reason or None,
        applied_kw=applied,
        clamped=ack.clamped,
        limit_reason=limit,
        limit_detail=detail,
    )


def _new_target(dispatch_id: UUID, asset_id: str, now: datetime) -> TargetRow:
    """A per-asset row no ack has touched yet."""
    return TargetRow(
        dispatch_id=dispatch_id,
        asset_id=asset_id,
        site_id="",
        allocation_kw=None,
        state="sent",
        applied_kw=None,
        clamped=False,
        reason=None,
        updated_at=now,
    )


__all__ = [
    "AckApplied",
    "AckIgnored",
    "AckOutcome",
    "IgnoredWhy",
    "apply_ack",
    "release_reason",
    "release_state",
    "took_from",
]
