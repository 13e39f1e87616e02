"""The dispatch lifecycle (DESIGN.md §4): create, route, deliver, ack, supersede, expire.

A dispatch has one *delivery* per site it goes to (one Setpoint per site session; the
setpoint id is the dispatch id) and per-asset *targets* with allocations and ack
states. Deliveries move forward only (`vpp_headend.lifecycle`); the dispatch's own state
is derived from them. Every transition is stored with its time in ``dispatch_events``.

Delivery is at-least-once: a delivery ``sent`` or ``received`` whose session ended
before the gateway's final ack is sent again on the next connect of that site (the
gateway's journal answers a repeat without applying it twice); the sweeper ends what
never gets its final ack (docs/runbook.md §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vpp_split import AssetShare, split

from . import convert
from .ack_retry import AckRetry
from .db import dispatch_repo as repo
from .db.engine import reader
from .domain import (
    TERMINAL_STATES,
    Ack,
    DeliveryPlan,
    DeliveryView,
    DispatchEvent,
    DispatchRequest,
    DispatchView,
    SetpointCommand,
    Site,
    TargetView,
)
from .errors import ConflictError, NotFoundError, ValidationFailedError
from .lifecycle import advances, aggregate
from .logs import log_event
from .metrics import Metrics
from .notify import DISPATCH_CHANNEL
from .registry import Registry
from .sessions import Session, SessionRegistry

log = logging.getLogger(__name__)

# Stands in for "no limit" (an asset without capacity or bounds): vpp_split wants finite.
_UNBOUNDED_KW = 1e9


@dataclass
class _AfterCommit:
    """Side effects to run once a transaction committed (metrics, logs, sends)."""

    actions: list[Callable[[], None]] = field(default_factory=list)

    def add(self, fn: Callable[[], None]) -> None:
        self.actions.append(fn)

    def run(self) -> None:
        for fn in self.actions:
            fn()


class DispatchService:
    """Creates dispatches and moves them through their lifecycle."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: Registry,
        sessions: SessionRegistry,
        metrics: Metrics,
        *,
        ack_grace_s: float,
        sweep_interval_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], UUID] = uuid4,
    ) -> None:
        self._engine = engine
        self._read = reader(engine)  # autocommit: reads cost no BEGIN/ROLLBACK
        self._registry = registry
        self._sessions = sessions
        self._metrics = metrics
        self._ack_grace = timedelta(seconds=ack_grace_s)
        self._sweep_interval = sweep_interval_s
        self._clock = clock
        self._new_id = new_id
        self._sweeper: asyncio.Task[None] | None = None
        #: Acks the database could not take yet; `AckRetry.handle` is how a stream acks.
        self.acks = AckRetry(self.on_ack)
        # Dispatches created here are routed here right after commit: their own NOTIFY,
        # when it comes back to this replica, has nothing left to do.
        self._created_here: OrderedDict[UUID, None] = OrderedDict()

    # -- lifecycle of the service --------------------------------------------------------

    async def start(self) -> None:
        """Start the expiry sweeper and the ack retry worker."""
        await self.acks.start()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="dispatch-sweeper")

    async def stop(self) -> None:
        """Stop the expiry sweeper and the ack retry worker."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.acks.stop()

    # -- create --------------------------------------------------------------------------

    async def create(self, req: DispatchRequest) -> tuple[DispatchView, bool]:
        """Create and route a dispatch; (view, created). A known Idempotency-Key returns
        the original dispatch with created=False."""
        if req.idempotency_key is not None:
            existing = await self._by_key(req)
            if existing is not None:
                return existing, False
        plans, detail = await self._plan(req)
        dispatch_id = self._new_id()
        now = self._clock()
        after = _AfterCommit()
        # Sessions of this replica that serve the new deliveries: those are marked `sent`
        # in the creating transaction and get the setpoint right after commit.
        routes: dict[str, Session] = {}
        for plan in plans:
            session = self._route(req.target_kind, req.target_id, plan.site_id)
            if session is not None and session.site_id == plan.site_id:
                routes[plan.site_id] = session
        self._created_here[dispatch_id] = None
        while len(self._created_here) > 10_000:
            self._created_here.popitem(last=False)
        try:
            async with self._engine.begin() as conn:
                view, to_send = await self._insert(
                    conn, dispatch_id, req, plans, detail, now, routes, after
                )
        except IntegrityError:
            self._created_here.pop(dispatch_id, None)
            if req.idempotency_key is None:
                raise
            # A concurrent request with the same key won the race: answer with its dispatch.
            existing = await self._by_key(req)
            if existing is None:
                raise
            return existing, False
        if not any(x.state == "pending" for x in view.deliveries):
            self._created_here.pop(dispatch_id, None)  # no NOTIFY was sent
        after.run()
        self._metrics.dispatches_created.labels(req.target_kind).inc()
        log_event(
            log,
            "dispatch_created",
            dispatch_id=dispatch_id,
            target_kind=req.target_kind,
            target_id=req.target_id,
            power_kw=req.power_kw,
            expires_at=req.expires_at.isoformat(),
            sites=[p.site_id for p in plans],
            online=[p.site_id for p in plans if p.online],
        )
        for session, od in to_send:
            self._push(session, od)
        # A gateway that connected while the transaction ran was not routed above and
        # did not see the uncommitted dispatch on connect: send it now (fenced as usual).
        late = 0
        for dlv in view.deliveries:
            if dlv.state == "pending":
                session = self._route(req.target_kind, req.target_id, dlv.site_id)
                if session is not None and session.site_id == dlv.site_id:
                    late += await self._send_new(session, dispatch_id)
        if late:
            return await self.get(dispatch_id), True
        return view, True

    async def _by_key(self, req: DispatchRequest) -> DispatchView | None:
        assert req.idempotency_key is not None
        async with self._read.connect() as conn:
            row = await repo.by_idempotency_key(conn, req.idempotency_key)
            if row is None:
                return None
            if row["request_fingerprint"] != req.fingerprint:
                raise ConflictError(
                    "Idempotency-Key was already used for a different dispatch "
                    f"({row['dispatch_id']})",
                    field="Idempotency-Key",
                )
            view = await repo.view(conn, row["dispatch_id"])
        assert view is not None
        return view

    async def _plan(self, req: DispatchRequest) -> tuple[list[DeliveryPlan], str | None]:
        """Which sites get what share. Raises NotFound / ValidationFailed."""
        if req.target_kind == "asset":
            asset = await self._registry.get_asset(req.target_id)
            if not asset.dispatchable:
                raise ValidationFailedError(
                    f"asset {asset.asset_id!r} is a {asset.kind}: it takes no setpoints",
                    field="asset_id",
                )
            online = asset.site_id in await self._online([asset.site_id])
            return [DeliveryPlan(asset.site_id, req.power_kw, online)], None
        if req.target_kind == "site":
            site = await self._registry.get_site(req.target_id)
            online = site.site_id in await self._online([site.site_id])
            return [DeliveryPlan(site.site_id, req.power_kw, online)], None
        sites = await self._registry.group_sites(req.target_id)
        if not sites:
            raise ValidationFailedError(
                f"group {req.target_id!r} has no member sites", field="group_id"
            )
        return self._split_group(
            req.power_kw, sites, await self._online([s.site_id for s in sites])
        )

    def _split_group(
        self, power_kw: float, sites: list[Site], online: set[str]
    ) -> tuple[list[DeliveryPlan], str | None]:
        """Split a group total across member sites by aggregate capacity (vpp_split).

        Sites connected now share the total; when none is connected, every member gets
        its share and holds it pending until it connects (or the dispatch expires).
        """
        shares = []
        for s in sites:
            lo, hi = s.bounds
            shares.append(
                AssetShare(
                    s.site_id,
                    # No known capacity anywhere: vpp_split falls back to an equal split.
                    capacity_kw=s.capacity_kw or None,
                    min_kw=max(lo, -_UNBOUNDED_KW),
                    max_kw=min(hi, _UNBOUNDED_KW),
                    online=(s.site_id in online) if online else True,
                )
            )
        result = split(power_kw, shares)
        plans = [
            DeliveryPlan(site_id, kw, site_id in online)
            for site_id, kw in sorted(result.allocations.items())
        ]
        return plans, result.explain()

    async def _online(self, site_ids: list[str]) -> set[str]:
        """Sites whose gateway is connected here or to another replica."""
        here = {s for s in site_ids if self._sessions.for_site(s) is not None}
        if len(here) == len(site_ids):
            return here
        async with self._read.connect() as conn:
            return here | await repo.connected_sites(conn, site_ids)

    def _route(self, target_kind: str, target_id: str, site_id: str) -> Session | None:
        """The open session that serves this delivery, if any."""
        if target_kind == "asset":
            return self._sessions.for_asset(target_id)
        return self._sessions.for_site(site_id)

    async def _insert(
        self,
        conn: AsyncConnection,
        dispatch_id: UUID,
        req: DispatchRequest,
        plans: list[DeliveryPlan],
        detail: str | None,
        now: datetime,
        routes: dict[str, Session],
        after: _AfterCommit,
    ) -> tuple[DispatchView, list[tuple[Session, repo.OpenDelivery]]]:
        """Insert a dispatch with its deliveries, target and events in one transaction.

        Deliveries whose site's current session is held here are stored as ``sent``
        (with the pending → sent events) and returned to be pushed after commit; the
        others stay ``pending`` for the replica holding the stream (NOTIFY) or the next
        connect. Returns the dispatch as stored, so nothing is read back.
        """
        # Only the newest pending setpoint per target is delivered: older ones that
        # were never sent are superseded now.
        for older, site_id in await repo.pending_same_key_sites(
            conn, req.target_kind, req.target_id, [p.site_id for p in plans], dispatch_id
        ):
            await self._move(
                conn,
                older,
                site_id,
                "superseded",
                now,
                after,
                reason=f"superseded by {dispatch_id}",
            )
        # The epoch fence: send only on a session that is still the site's current one
        # (its gateway_sessions row stays share-locked until commit).
        current = await repo.current_sessions(
            conn, {site_id: s.session_id for site_id, s in routes.items()}
        )
        sent_now = self._clock() if current else now
        events = [repo.event_row(dispatch_id, now, "pending", "dispatch")]
        events += [repo.event_row(dispatch_id, now, "pending", "site", p.site_id) for p in plans]
        deliveries: list[DeliveryView] = []
        to_send: list[tuple[Session, repo.OpenDelivery]] = []
        for plan in plans:
            if plan.site_id in current:
                session = routes[plan.site_id]
                dlv = DeliveryView(plan.site_id, plan.power_kw, "sent", sent_now, sent_now, None)
                events.append(
                    repo.event_row(
                        dispatch_id,
                        sent_now,
                        "sent",
                        "site",
                        plan.site_id,
                        f"session epoch {session.epoch}",
                    )
                )
                to_send.append(
                    (
                        session,
                        repo.OpenDelivery(
                            dispatch_id=dispatch_id,
                            site_id=plan.site_id,
                            power_kw=plan.power_kw,
                            state="sent",
                            sent_at=sent_now,
                            target_kind=req.target_kind,
                            target_id=req.target_id,
                            issued_at=now,
                            expires_at=req.expires_at,
                        ),
                    )
                )
                after.add(
                    _transition_log(dispatch_id, "site", "pending", "sent", site_id=plan.site_id)
                )
            else:
                dlv = DeliveryView(plan.site_id, plan.power_kw, "pending", None, now, None)
            deliveries.append(dlv)
        state = aggregate(x.state for x in deliveries)
        updated_at = now
        if state != "pending":
            updated_at = sent_now
            events.append(repo.event_row(dispatch_id, sent_now, state, "dispatch"))
            after.add(_transition_log(dispatch_id, "dispatch", "pending", state))
        targets: tuple[TargetView, ...] = ()
        if req.target_kind == "asset":
            targets = (
                TargetView(
                    req.target_id, plans[0].site_id, req.power_kw, "pending", None, False, None, now
                ),
            )
        await repo.create(
            conn,
            dispatch={
                "dispatch_id": dispatch_id,
                "target_kind": req.target_kind,
                "target_id": req.target_id,
                "power_kw": req.power_kw,
                "state": state,
                "idempotency_key": req.idempotency_key,
                "request_fingerprint": req.fingerprint,
                "issued_at": now,
                "expires_at": req.expires_at,
                "updated_at": updated_at,
                "detail": detail,
            },
            deliveries=[
                {
                    "dispatch_id": dispatch_id,
                    "site_id": x.site_id,
                    "power_kw": x.power_kw,
                    "state": x.state,
                    "attempts": 1 if x.state == "sent" else 0,
                    "sent_at": x.sent_at,
                    "updated_at": x.updated_at,
                }
                for x in deliveries
            ],
            events=events,
            targets=[
                {
                    "dispatch_id": dispatch_id,
                    "asset_id": x.asset_id,
                    "site_id": x.site_id,
                    "allocation_kw": x.allocation_kw,
                    "state": x.state,
                    "updated_at": x.updated_at,
                }
                for x in targets
            ],
            # Every replica hears of it once committed; the one holding the stream
            # delivers. Nothing pending: nothing for another replica to do.
            notify=(DISPATCH_CHANNEL if any(x.state == "pending" for x in deliveries) else None),
        )
        view = DispatchView(
            dispatch_id=dispatch_id,
            target_kind=req.target_kind,
            target_id=req.target_id,
            power_kw=req.power_kw,
            state=state,
            issued_at=now,
            expires_at=req.expires_at,
            updated_at=updated_at,
            detail=detail,
            deliveries=tuple(sorted(deliveries, key=lambda x: x.site_id)),
            targets=targets,
            events=tuple(
                DispatchEvent(e["at"], e["state"], e["scope"], e["scope_id"], e["detail"])
                for e in events
            ),
        )
        return view, to_send

    # -- delivery ------------------------------------------------------------------------

    async def _send_new(self, session: Session, dispatch_id: UUID) -> int:
        """pending → sent for a just-created delivery, then put it on the session's stream.

        Only while ``session`` is the site's current one in ``gateway_sessions`` (the
        row is share-locked, so a takeover on another replica waits or wins): a replica
        never sends on a stream that has been superseded elsewhere. Returns 1 if sent.
        """
        now = self._clock()
        after = _AfterCommit()
        to_send: repo.OpenDelivery | None = None
        async with self._engine.begin() as conn:
            row = await repo.lock_dispatch(conn, dispatch_id)
            if row is None or not await repo.session_is_current(
                conn, session.site_id, session.session_id
            ):
                return 0
            for dlv in await repo.deliveries(conn, dispatch_id):
                if dlv["site_id"] == session.site_id and dlv["state"] == "pending":
                    await self._mark_sent(conn, dispatch_id, session, now, after, dlv["attempts"])
                    to_send = _open_delivery(row, dlv)
        after.run()
        if to_send is None:
            return 0
        self._push(session, to_send)
        return 1

    async def deliver_pending(self, session: Session) -> int:
        """On connect: send the newest open delivery per target, in issue order.

        Older pending ones for the same target are superseded. One in flight from an
        earlier session — ``sent`` (never acknowledged) or ``received`` (no final ack) — is
        sent again, until the sweeper's deadline (``expires_at`` + ack grace) even if it
        expired meanwhile: the gateway answers a setpoint it already handled with the final
        ack from its journal, never applying it twice, and a late one it never had with
        EXPIRED. A ``pending`` one is never delivered late. Returns setpoints sent.
        """
        now = self._clock()
        async with self._read.connect() as conn:
            open_ = await repo.open_deliveries_for_site(conn, session.site_id)
        newest: dict[tuple[str, str], repo.OpenDelivery] = {}
        older: list[repo.OpenDelivery] = []
        for od in open_:  # oldest first
            deadline = od.expires_at if od.state == "pending" else od.expires_at + self._ack_grace
            if deadline <= now:
                continue  # the sweeper ends it
            if od.target_kind == "asset" and od.target_id not in session.assets:
                continue
            key = (od.target_kind, od.target_id)
            if key in newest:
                older.append(newest[key])
            newest[key] = od
        after = _AfterCommit()
        to_send: list[repo.OpenDelivery] = []
        for od in older:
            if od.state == "pending":
                async with self._engine.begin() as conn:
                    await repo.lock_dispatch(conn, od.dispatch_id)
                    await self._move(
                        conn,
                        od.dispatch_id,
                        od.site_id,
                        "superseded",
                        now,
                        after,
                        reason="a newer setpoint for the same target was pending",
                    )
        for od in sorted(newest.values(), key=lambda o: (o.issued_at, str(o.dispatch_id))):
            if (
                od.state != "pending"
                and od.sent_at is not None
                and od.sent_at >= session.connected_since
            ):
                continue  # sent on this very session already
            async with self._engine.begin() as conn:
                locked = await repo.lock_dispatch(conn, od.dispatch_id)
                current = {x["site_id"]: x for x in await repo.deliveries(conn, od.dispatch_id)}
                dlv = current.get(od.site_id)
                if locked is None or dlv is None or dlv["state"] not in repo.OPEN_STATES:
                    continue
                if not await repo.session_is_current(conn, session.site_id, session.session_id):
                    break  # another replica took the site over; it delivers
                await self._mark_sent(conn, od.dispatch_id, session, now, after, dlv["attempts"])
            to_send.append(_open_delivery(locked, dlv))
        after.run()
        for od in to_send:
            self._push(session, od)
        return len(to_send)

    async def _mark_sent(
        self,
        conn: AsyncConnection,
        dispatch_id: UUID,
        session: Session,
        now: datetime,
        after: _AfterCommit,
        attempts: int,
    ) -> None:
        if attempts > 0:
            # A re-delivery: the state stays `sent`; the event says so.
            await repo.set_delivery(
                conn,
                dispatch_id,
                session.site_id,
                sent_at=now,
                attempts=attempts + 1,
                updated_at=now,
            )
            await repo.insert_event(
                conn,
                dispatch_id,
                now,
                "sent",
                "site",
                session.site_id,
                f"re-sent on session epoch {session.epoch} (attempt {attempts + 1})",
            )
            return
        await self._move(
            conn,
            dispatch_id,
            session.site_id,
            "sent",
            now,
            after,
            detail=f"session epoch {session.epoch}",
            sent_at=now,
            attempts=1,
        )

    async def on_notified(self, dispatch_id: UUID) -> int:
        """A dispatch was created on some replica (NOTIFY): deliver its pending
        deliveries whose site's stream this replica holds. Returns setpoints sent."""
        if self._created_here.pop(dispatch_id, 0) is None:
            return 0  # created (and routed) here
        async with self._read.connect() as conn:
            pending = await repo.pending_deliveries(conn, dispatch_id)
        sent = 0
        for site_id, target_kind, target_id in pending:
            session = self._route(target_kind, target_id, site_id)
            if session is not None and session.site_id == site_id:
                sent += await self._send_new(session, dispatch_id)
        return sent

    def _push(self, session: Session, od: repo.OpenDelivery) -> None:
        kind: Any = "default" if session.legacy else od.target_kind
        cmd = SetpointCommand(
            setpoint_id=od.dispatch_id,
            target_kind=kind,
            target_id=od.target_id,
            power_kw=od.power_kw,
            issued_at=od.issued_at,
            expires_at=od.expires_at,
        )
        session.send(convert.setpoint_message(cmd))

    # -- transitions ---------------------------------------------------------------------

    async def _move(
        self,
        conn: AsyncConnection,
        dispatch_id: UUID,
        site_id: str,
        state: str,
        now: datetime,
        after: _AfterCommit,
        *,
        reason: str | None = None,
        detail: str | None = None,
        **values: Any,
    ) -> bool:
        """Lock the dispatch, move one delivery forward and recompute the dispatch's
        state. False when it would not be progress."""
        locked = await repo.lock_with_deliveries(conn, dispatch_id)
        if locked is None:
            return False
        events: list[dict[str, Any]] = []
        writes = repo.Writes()
        moved = self._advance(
            locked,
            site_id,
            state,
            now,
            after,
            events,
            writes,
            reason=reason,
            detail=detail,
            **values,
        )
        if events:
            writes.add(repo.events_insert(events))
        await writes.run(conn)
        return moved

    def _advance(
        self,
        locked: repo.Locked,
        site_id: str,
        state: str,
        now: datetime,
        after: _AfterCommit,
        events: list[dict[str, Any]],
        writes: repo.Writes,
        *,
        reason: str | None = None,
        detail: str | None = None,
        **values: Any,
    ) -> bool:
        """Move one delivery forward given the ``locked`` dispatch (read in this
        transaction), and the dispatch's state with it. The updates go to ``writes`` and
        the transitions' events to ``events``: the caller sends them. False when it would
        not be progress."""
        row, dlvs = locked.row, locked.deliveries
        dispatch_id: UUID = row["dispatch_id"]
        dlv = dlvs.get(site_id)
        if dlv is None or not advances(dlv["state"], state):
            return False
        writes.add(
            repo.delivery_update(
                dispatch_id, site_id, state=state, updated_at=now, reason=reason, **values
            )
        )
        events.append(repo.event_row(dispatch_id, now, state, "site", site_id, reason or detail))
        after.add(
            _transition_log(
                dispatch_id, "site", dlv["state"], state, site_id=site_id, reason=reason
            )
        )
        states = [x["state"] for x in dlvs.values() if x["site_id"] != site_id] + [state]
        new = aggregate(states)
        old = row["state"]
        if old != new:
            writes.add(repo.dispatch_update(dispatch_id, state=new, updated_at=now))
            events.append(repo.event_row(dispatch_id, now, new, "dispatch"))
            after.add(_transition_log(dispatch_id, "dispatch", old, new))
            if new in TERMINAL_STATES:
                after.add(lambda: self._metrics.dispatches_final.labels(new).inc())
        return True

    # -- acks ----------------------------------------------------------------------------

    async def on_ack(self, session: Session, ack: Ack) -> bool:
        """Apply a gateway's ack; idempotent (a repeat or a backwards move changes
        nothing). Returns True when something changed."""
        now = self._clock()
        after = _AfterCommit()
        changed = False
        async with self._engine.begin() as conn:
            # One transaction, read once: the locked dispatch, then its deliveries and
            # targets; then the writes (targets, delivery, dispatch, events) in one
            # statement. Four round trips with BEGIN and COMMIT, however many assets.
            locked = await repo.lock_with_deliveries(conn, ack.setpoint_id)
            dlv = locked.deliveries.get(session.site_id) if locked is not None else None
            if locked is None or dlv is None:
                self._metrics.acks_ignored.labels("unknown_setpoint").inc()
                log_event(
                    log,
                    "ack_ignored",
                    level=logging.WARNING,
                    site_id=session.site_id,
                    setpoint_id=ack.setpoint_id,
                    why="unknown setpoint for this site",
                )
                return False
            events: list[dict[str, Any]] = []
            writes = repo.Writes()
            changed |= self._ack_targets(locked, session, ack, now, events, writes)
            moved = self._advance(
                locked,
                session.site_id,
                ack.state,
                now,
                after,
                events,
                writes,
                reason=ack.reason or None,
            )
            if events:
                writes.add(repo.events_insert(events))
            await writes.run(conn)
            changed |= moved
            sent_at = dlv["sent_at"]
            if moved and ack.state in TERMINAL_STATES and sent_at is not None:
                latency = max(0.0, (now - sent_at).total_seconds())
                after.add(lambda: self._metrics.ack_latency.observe(latency))
        after.run()
        if not changed:
            self._metrics.acks_ignored.labels("repeat").inc()
        return changed

    def _ack_targets(
        self,
        locked: repo.Locked,
        session: Session,
        ack: Ack,
        now: datetime,
        events: list[dict[str, Any]],
        writes: repo.Writes,
    ) -> bool:
        """Per-asset bookkeeping: allocations and ack states (forward only); the upserts
        go to ``writes``, the transitions' events to ``events``."""
        dispatch, existing = locked.row, locked.targets
        # The assets of the session that sent the ack (a retried ack may outlive it).
        site_id, served = session.site_id, session.assets
        # A site reports only on assets its session serves: an allocation naming another
        # site's asset is refused and logged, never stored under that asset.
        foreign = sorted({a.asset_id for a in ack.allocations if a.asset_id not in served})
        if foreign:
            self._metrics.acks_ignored.labels("foreign_asset").inc()
            log_event(
                log,
                "ack_foreign_asset",
                level=logging.WARNING,
                site_id=site_id,
                setpoint_id=ack.setpoint_id,
                asset_ids=foreign[:10],
            )
        allocations = [a for a in ack.allocations if a.asset_id in served]
        updates: dict[str, dict[str, Any]] = {}
        for alloc in allocations:
            updates.setdefault(alloc.asset_id, {})["allocation_kw"] = alloc.power_kw
        if dispatch["target_kind"] == "asset":
            subjects = [dispatch["target_id"]]
        else:
            subjects = [a.asset_id for a in allocations]
            if ack.asset_id and ack.asset_id in served:
                subjects.append(ack.asset_id)
        changed = False
        rows: list[dict[str, Any]] = []
        for asset_id in dict.fromkeys(subjects):
            cur = existing.get(asset_id)
            values = dict(updates.get(asset_id, {}))
            cur_state = cur["state"] if cur is not None else "sent"
            if cur is None or advances(cur_state, ack.state):
                values["state"] = ack.state
                values["reason"] = ack.reason or None
                if ack.applied_kw is not None and (
                    dispatch["target_kind"] == "asset" or asset_id == ack.asset_id
                ):
                    values["applied_kw"] = ack.applied_kw
                values["clamped"] = ack.clamped
                events.append(
                    repo.event_row(
                        ack.setpoint_id, now, ack.state, "asset", asset_id, ack.reason or None
                    )
                )
            if not values or (cur is not None and all(cur.get(k) == v for k, v in values.items())):
                continue
            # The whole row: what is stored (read after the dispatch's lock) with the changes.
            base = cur if cur is not None else _NEW_TARGET
            rows.append(
                {
                    **base,
                    **values,
                    "dispatch_id": ack.setpoint_id,
                    "asset_id": asset_id,
                    "site_id": site_id,
                    "updated_at": now,
                }
            )
            changed = True
        if rows:
            writes.add(repo.targets_upsert(rows))
        return changed

    # -- expiry --------------------------------------------------------------------------

    async def sweep(self) -> int:
        """End deliveries that can no longer end on their own: ``pending`` past
        ``expires_at`` → expired (never delivered late); ``sent`` with no ack
        ``ack_grace_s`` after it → expired; ``received`` with no final ack by then →
        failed (the gateway had it; whether it acted is unknown). Returns deliveries
        ended."""
        now = self._clock()
        async with self._read.connect() as conn:
            ids = await repo.expirable(conn, now, now - self._ack_grace)
        ended = 0
        for dispatch_id in ids:
            after = _AfterCommit()
            async with self._engine.begin() as conn:
                row = await repo.lock_dispatch(conn, dispatch_id)
                if row is None:
                    continue
                for dlv in await repo.deliveries(conn, dispatch_id):
                    end = self._overdue(dlv["state"], row["expires_at"], now)
                    if end is not None and await self._move(
                        conn, dispatch_id, dlv["site_id"], end[0], now, after, reason=end[1]
                    ):
                        ended += 1
            after.run()
        return ended

    def _overdue(self, state: str, expires_at: datetime, now: datetime) -> tuple[str, str] | None:
        """(final state, reason) for a delivery in ``state`` that is overdue at ``now``."""
        if state == "pending" and expires_at <= now:
            return "expired", "expired before delivery"
        if expires_at > now - self._ack_grace:
            return None
        if state == "sent":
            return "expired", "no ack before expiry"
        if state == "received":
            return "failed", "no final ack"
        return None

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # keep sweeping after a transient database error
                log_event(log, "sweep_failed", level=logging.WARNING, error=exc)
            await asyncio.sleep(self._sweep_interval)

    # -- queries -------------------------------------------------------------------------

    async def get(self, dispatch_id: UUID) -> DispatchView:
        """One dispatch with deliveries, targets and events; NotFound when unknown."""
        async with self._read.connect() as conn:
            found = await repo.view(conn, dispatch_id)
        if found is None:
            raise NotFoundError(f"unknown dispatch {dispatch_id}", field="dispatch_id")
        return found

    async def search(
        self, *, asset_id: str | None, site_id: str | None, state: str | None, limit: int
    ) -> list[DispatchView]:
        """Dispatches, newest first."""
        async with self._read.connect() as conn:
            return await repo.search(
                conn, asset_id=asset_id, site_id=site_id, state=state, limit=limit
            )


#: A per-asset row no ack has touched yet.
_NEW_TARGET: dict[str, Any] = {
    "allocation_kw": None,
    "state": "sent",
    "applied_kw": None,
    "clamped": False,
    "reason": None,
}


def _transition_log(
    dispatch_id: UUID, scope: str, old: str, new: str, **fields: Any
) -> Callable[[], None]:
    """A deferred ``dispatch_transition`` log line (run after commit)."""
    line: dict[str, Any] = {"dispatch_id": dispatch_id, "scope": scope, **fields}
    line["from"], line["to"] = old, new
    return lambda: log_event(log, "dispatch_transition", **line)


def _open_delivery(dispatch: Any, delivery: Any) -> repo.OpenDelivery:
    return repo.OpenDelivery(
        dispatch_id=dispatch["dispatch_id"],
        site_id=delivery["site_id"],
        power_kw=delivery["power_kw"],
        state=delivery["state"],
        sent_at=delivery["sent_at"],
        target_kind=dispatch["target_kind"],
        target_id=dispatch["target_id"],
        issued_at=dispatch["issued_at"],
        expires_at=dispatch["expires_at"],
    )


__all__ = ["DispatchService"]
