"""Creating a dispatch: its rows built as values (`build`), then written in one
transaction with the superseding of older pending ones and the epoch fence (`insert`) —
or, on the hot path (its gateway connected here), in one statement (`insert_here`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import dispatch_create
from ..db import dispatch_routing as routing
from ..db.dispatch_rows import EventRow, NewDelivery, NewDispatch, OpenDelivery, TargetRow
from ..db.notify_repo import DISPATCH_CHANNEL
from ..domain import DeliveryView, DispatchEvent, DispatchRequest, DispatchView, TargetView
from ..lifecycle import aggregate
from ..sessions import Session
from .delivery import sent_detail
from .effects import AfterCommit, move
from .planning import NOT_DISPATCHABLE_KINDS, SKIPPED_REASON, Plan
from .transitions import Move


@dataclass(frozen=True, slots=True)
class Built:
    """A new dispatch: its rows, how the API shows it, what to send after commit."""

    new: NewDispatch
    view: DispatchView
    to_send: tuple[tuple[Session, OpenDelivery], ...]
    moves: tuple[Move, ...]


def build(
    dispatch_id: UUID,
    req: DispatchRequest,
    plan: Plan,
    now: datetime,
    sent_now: datetime,
    routes: dict[str, Session],
) -> Built:
    """The rows of a new dispatch. Deliveries to a site in ``routes`` (its current
    session is held here, fenced) are ``sent`` at ``sent_now``; skipped members are
    recorded as such; the others are ``pending``."""
    events = [EventRow(dispatch_id, now, "pending", "dispatch")]
    events += [
        EventRow(dispatch_id, now, "pending", "site", p.site_id)
        for p in plan.deliveries
        if not p.skipped
    ]
    deliveries: list[NewDelivery] = []
    to_send: list[tuple[Session, OpenDelivery]] = []
    moves: list[Move] = []
    for p in plan.deliveries:
        session = routes.get(p.site_id)
        if p.skipped:
            deliveries.append(NewDelivery(p.site_id, 0.0, "skipped", None, now, SKIPPED_REASON))
            events.append(EventRow(dispatch_id, now, "skipped", "site", p.site_id, SKIPPED_REASON))
        elif session is not None:
            deliveries.append(NewDelivery(p.site_id, p.power_kw, "sent", sent_now, sent_now))
            detail = sent_detail(session, req.duration_s is not None or req.ends_at is not None)
            events.append(EventRow(dispatch_id, sent_now, "sent", "site", p.site_id, detail))
            to_send.append((session, _open(dispatch_id, req, p.site_id, p.power_kw, now, sent_now)))
            moves.append(Move(dispatch_id, "site", "pending", "sent", p.site_id))
        else:
            deliveries.append(NewDelivery(p.site_id, p.power_kw, "pending", None, now))
    state = aggregate(x.state for x in deliveries)
    if state != "pending":
        events.append(EventRow(dispatch_id, sent_now, state, "dispatch"))
        moves.append(Move(dispatch_id, "dispatch", "pending", state))
    new = NewDispatch(
        dispatch_id=dispatch_id,
        target_kind=req.target_kind,
        target_id=req.target_id,
        power_kw=req.power_kw,
        state=state,
        idempotency_key=req.idempotency_key,
        request_fingerprint=req.fingerprint,
        issued_at=now,
        expires_at=req.expires_at,
        updated_at=now if state == "pending" else sent_now,
        detail=plan.detail,
        duration_s=req.duration_s,
        ends_at=req.ends_at,
        deliveries=tuple(sorted(deliveries, key=lambda x: x.site_id)),
        events=tuple(events),
        targets=_targets(dispatch_id, req, plan, now),
    )
    return Built(new, _view(new), tuple(to_send), tuple(moves))


def _open(
    dispatch_id: UUID,
    req: DispatchRequest,
    site_id: str,
    power_kw: float,
    now: datetime,
    sent_now: datetime,
) -> OpenDelivery:
    return OpenDelivery(
        dispatch_id=dispatch_id,
        site_id=site_id,
        power_kw=power_kw,
        state="sent",
        sent_at=sent_now,
        target_kind=req.target_kind,
        target_id=req.target_id,
        issued_at=now,
        expires_at=req.expires_at,
        duration_s=req.duration_s,
        ends_at=req.ends_at,
    )


def _targets(
    dispatch_id: UUID, req: DispatchRequest, plan: Plan, now: datetime
) -> tuple[TargetRow, ...]:
    """An asset target's one per-asset row, known up front (others come with acks)."""
    if req.target_kind != "asset":
        return ()
    site_id = plan.deliveries[0].site_id
    return (
        TargetRow(
            dispatch_id, req.target_id, site_id, req.power_kw, "pending", None, False, None, now
        ),
    )


def _view(new: NewDispatch) -> DispatchView:
    """The dispatch as stored, so nothing is read back."""
    return DispatchView(
        dispatch_id=new.dispatch_id,
        target_kind=new.target_kind,
        target_id=new.target_id,
        power_kw=new.power_kw,
        state=new.state,
        issued_at=new.issued_at,
        expires_at=new.expires_at,
        updated_at=new.updated_at,
        detail=new.detail,
        duration_s=new.duration_s,
        ends_at=new.ends_at,
        deliveries=tuple(
            DeliveryView(x.site_id, x.power_kw, x.state, x.sent_at, x.updated_at, x.reason)
            for x in new.deliveries
        ),
        targets=tuple(
            TargetView(
                x.asset_id,
                x.site_id,
                x.allocation_kw,
                x.state,
                x.applied_kw,
                x.clamped,
                x.reason,
                x.updated_at,
            )
            for x in new.targets
        ),
        events=tuple(
            DispatchEvent(e.at, e.state, e.scope, e.scope_id, e.detail) for e in new.events
        ),
    )


async def insert(
    conn: AsyncConnection,
    dispatch_id: UUID,
    req: DispatchRequest,
    plan: Plan,
    now: datetime,
    clock: Callable[[], datetime],
    routes: dict[str, Session],
    after: AfterCommit,
) -> Built:
    """Insert a dispatch with its deliveries, targets and events in one transaction.

    Older pending dispatches for the same target are superseded first (only the newest
    pending setpoint per target is delivered). Deliveries whose site's current session
    is held here are stored as ``sent`` and returned to be pushed after commit; the
    others stay ``pending`` for the replica holding the stream (NOTIFY) or the next
    connect.
    """
    sites = [p.site_id for p in plan.deliveries if not p.skipped]
    for older, site_id in await routing.pending_same_key_sites(
        conn, req.target_kind, req.target_id, sites, dispatch_id
    ):
        await move(
            conn, older, site_id, "superseded", now, after, reason=f"superseded by {dispatch_id}"
        )
    # The epoch fence: send only on a session that is still the site's current one
    # (its gateway_sessions row stays share-locked until commit).
    current = await routing.current_sessions(
        conn, {site_id: s.session_id for site_id, s in routes.items()}
    )
    fenced = {site_id: s for site_id, s in routes.items() if site_id in current}
    # The `sent` events carry their own clock reading, taken once the fence is held.
    built = build(dispatch_id, req, plan, now, clock() if current else now, fenced)
    # Every replica hears of it once committed; the one holding the stream delivers.
    # Nothing pending: nothing for another replica to do.
    pending = any(x.state == "pending" for x in built.new.deliveries)
    await dispatch_create.create(conn, built.new, notify=DISPATCH_CHANNEL if pending else None)
    after.moved(built.moves)
    return built


async def insert_here(
    conn: AsyncConnection,
    dispatch_id: UUID,
    req: DispatchRequest,
    plan: Plan,
    session: Session,
    now: datetime,
) -> Built | None:
    """The hot path: an asset or site dispatch whose site's session is held here
    (``plan`` from `planning.connected_plan`), written ``sent`` on it in one statement
    (`dispatch_create.create_if_current`; ``conn`` in autocommit).

    None, with nothing written, when the statement finds the session no longer current
    (the fence), the registry no longer agreeing with the session (an asset moved or not
    dispatchable), or an older dispatch for the target pending: `insert` then does it
    all in a transaction — supersede through the state machine, fence, plan from the
    registry. Nothing is pending, so nothing is NOTIFYed.
    """
    site_id = session.site_id
    built = build(dispatch_id, req, plan, now, now, {site_id: session})
    checks = await dispatch_create.create_if_current(
        conn,
        built.new,
        site_id=site_id,
        session_id=session.session_id,
        not_dispatchable=NOT_DISPATCHABLE_KINDS,
    )
    return built if checks.met else None


__all__ = ["Built", "build", "insert", "insert_here"]
