"""`DispatchService`: the dispatch lifecycle's one entry point (DESIGN.md §4).

A thin composition: `planning` decides the deliveries, `create` writes a new dispatch,
`delivery` routes and sends, `acks` and `transitions` decide what an ack changes,
`cancel` decides what a cancel changes, `release` sends Releases, `expiry` sweeps,
`measure` measures delivered power. This module runs transactions and
owns the background task (sweep, then measure, every ``sweep_interval_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..ack_retry import AckRetry
from ..db import dispatch_repo as repo
from ..db import dispatch_views as views
from ..db.engine import reader
from ..domain import Ack, DispatchRequest, DispatchView
from ..errors import ConflictError, NotFoundError
from ..logs import log_event
from ..metrics import Metrics
from ..registry import Registry
from ..sessions import Session, SessionRegistry
from . import cancel as cancelling
from . import create as creating
from .acks import AckApplied, AckIgnored, AckOutcome, apply_ack
from .delivery import Push, Router
from .effects import AfterCommit, write
from .expiry import Sweeper
from .measure import DeliveredMeter
from .planning import Envelopes, Plan, Planner, connected_plan
from .release import Releaser

log = logging.getLogger("vpp_headend.dispatch")


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchTiming:
    """The service's durations, in seconds (from `Settings`)."""

    ack_grace_s: float
    sweep_interval_s: float
    envelope_max_age_s: float
    delivery_window_s: float
    delivery_settle_s: float


class DispatchService:
    """Creates dispatches and moves them through their lifecycle."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: Registry,
        sessions: SessionRegistry,
        metrics: Metrics,
        *,
        push: Push,
        envelopes: Envelopes,
        timing: DispatchTiming,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_id: Callable[[], UUID] = uuid4,
    ) -> None:
        self._engine = engine
        self._read = reader(engine)  # autocommit: reads cost no BEGIN/ROLLBACK
        self._sessions = sessions
        self._metrics = metrics
        self._interval = timing.sweep_interval_s
        self._clock = clock
        self._new_id = new_id
        grace = timedelta(seconds=timing.ack_grace_s)
        self._planner = Planner(
            registry, self._online, envelopes, max_age_s=timing.envelope_max_age_s
        )
        self._router = Router(
            engine, self._read, sessions, metrics, push, ack_grace=grace, clock=clock
        )
        self._sweeper = Sweeper(engine, self._read, metrics, ack_grace=grace, clock=clock)
        self._releaser = Releaser(engine, self._read, sessions, metrics, push, clock=clock)
        self._meter = DeliveredMeter(
            engine,
            self._read,
            metrics,
            window=timedelta(seconds=timing.delivery_window_s),
            settle=timedelta(seconds=timing.delivery_settle_s),
            clock=clock,
        )
        self._task: asyncio.Task[None] | None = None
        #: Acks the database could not take yet; `AckRetry.handle` is how a stream acks.
        self.acks = AckRetry(self.on_ack)

    # -- lifecycle of the service --------------------------------------------------------

    async def start(self) -> None:
        """Start the sweep-and-measure task and the ack retry worker."""
        await self.acks.start()
        self._task = asyncio.create_task(self._housekeeping(), name="dispatch-sweeper")

    async def stop(self) -> None:
        """Stop the sweep-and-measure task and the ack retry worker."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.acks.stop()

    async def _housekeeping(self) -> None:
        while True:
            for name, job in (("sweep", self.sweep), ("measure", self.measure)):
                try:
                    await job()
                except Exception as exc:  # keep going after a transient database error
                    log_event(log, f"{name}_failed", level=logging.WARNING, error=exc)
            await asyncio.sleep(self._interval)

    # -- create --------------------------------------------------------------------------

    async def create(self, req: DispatchRequest) -> tuple[DispatchView, bool]:
        """Create and route a dispatch; (view, created). A known Idempotency-Key returns
        the original dispatch with created=False.

        An asset or site whose gateway is connected here takes the hot path, one
        statement (`_create_here`); anything else, or a check of that statement that
        fails, the general one (`_create_routed`). docs/decisions.md, "POST /dispatch in
        few round trips"."""
        if req.idempotency_key is not None:
            existing = await self._by_key(req)
            if existing is not None:
                return existing, False
        try:
            view = await self._create_here(req)
            if view is None:
                view = await self._create_routed(req)
        except IntegrityError:
            if req.idempotency_key is None:
                raise
            # A concurrent request with the same key won the race: answer with its dispatch.
            existing = await self._by_key(req)
            if existing is None:
                raise
            return existing, False
        return view, True

    async def _create_here(self, req: DispatchRequest) -> DispatchView | None:
        """Create the dispatch `sent` on the session of this replica that serves its
        asset or site, in one autocommitted statement; None (nothing written) when there
        is no such session or the statement's checks fail."""
        if req.target_kind == "asset":
            session = self._sessions.for_asset(req.target_id)
        elif req.target_kind == "site":
            session = self._sessions.for_site(req.target_id)
        else:
            return None
        if session is None:
            return None
        plan = connected_plan(req, session.site_id)
        dispatch_id = self._new_id()
        async with self._read.connect() as conn:  # autocommit: one statement, one transaction
            built = await creating.insert_here(conn, dispatch_id, req, plan, session, self._clock())
        if built is None:
            return None
        after = AfterCommit(self._metrics)
        after.moved(built.moves)
        after.run()
        self._created_log(req, dispatch_id, plan)
        for target, od in built.to_send:
            self._router.push(target, od)
        return built.view

    async def _create_routed(self, req: DispatchRequest) -> DispatchView:
        """Plan from the registry, then supersede, fence and insert in one transaction;
        deliveries this replica cannot send stay pending (NOTIFY)."""
        plan = await self._planner.plan(req)
        dispatch_id = self._new_id()
        now = self._clock()
        after = AfterCommit(self._metrics)
        # Sessions of this replica that serve the new deliveries: those are marked `sent`
        # in the creating transaction and get the setpoint right after commit.
        routes = self._routes(req, plan)
        self._router.created_here(dispatch_id)
        try:
            async with self._engine.begin() as conn:
                built = await creating.insert(
                    conn, dispatch_id, req, plan, now, self._clock, routes, after
                )
        except BaseException:
            self._router.forget(dispatch_id)
            raise
        view = built.view
        if not any(x.state == "pending" for x in view.deliveries):
            self._router.forget(dispatch_id)  # no NOTIFY was sent
        after.run()
        self._created_log(req, dispatch_id, plan)
        for session, od in built.to_send:
            self._router.push(session, od)
        late = await self._send_late(req, view)
        return await self.get(dispatch_id) if late else view

    async def _send_late(self, req: DispatchRequest, view: DispatchView) -> int:
        """A gateway that connected while the creating transaction ran was not routed
        and did not see the uncommitted dispatch on connect: send it now (fenced)."""
        late = 0
        for dlv in view.deliveries:
            if dlv.state == "pending":
                found = self._router.route(req.target_kind, req.target_id, dlv.site_id)
                if found is not None:
                    late += await self._router.send_new(found, view.dispatch_id)
        return late

    def _routes(self, req: DispatchRequest, plan: Plan) -> dict[str, Session]:
        routes: dict[str, Session] = {}
        for p in plan.deliveries:
            if p.skipped:
                continue
            session = self._router.route(req.target_kind, req.target_id, p.site_id)
            if session is not None:
                routes[p.site_id] = session
        return routes

    def _created_log(self, req: DispatchRequest, dispatch_id: UUID, plan: Plan) -> None:
        self._metrics.dispatches_created.labels(req.target_kind).inc()
        log_event(
            log,
            "dispatch_created",
            dispatch_id=dispatch_id,
            target_kind=req.target_kind,
            target_id=req.target_id,
            power_kw=req.power_kw,
            expires_at=req.expires_at.isoformat(),
            sites=[p.site_id for p in plan.deliveries if not p.skipped],
            online=[p.site_id for p in plan.deliveries if p.online],
            skipped=[p.site_id for p in plan.deliveries if p.skipped],
        )

    async def _by_key(self, req: DispatchRequest) -> DispatchView | None:
        assert req.idempotency_key is not None
        async with self._read.connect() as conn:
            row = await repo.by_idempotency_key(conn, req.idempotency_key)
            if row is None:
                return None
            if row.request_fingerprint != req.fingerprint:
                raise ConflictError(
                    "Idempotency-Key was already used for a different dispatch "
                    f"({row.dispatch_id})",
                    field="Idempotency-Key",
                )
            view = await views.view(conn, row.dispatch_id)
        assert view is not None
        return view

    async def _online(self, site_ids: list[str]) -> set[str]:
        """Sites whose gateway is connected here or to another replica."""
        here = {s for s in site_ids if self._sessions.for_site(s) is not None}
        if len(here) == len(site_ids):
            return here
        async with self._read.connect() as conn:
            return here | await repo.connected_sites(conn, site_ids)

    # -- delivery ------------------------------------------------------------------------

    async def on_notified(self, dispatch_id: UUID) -> int:
        """A dispatch was created on some replica (NOTIFY): deliver what this replica's
        streams serve. Returns setpoints sent."""
        return await self._router.on_notified(dispatch_id)

    async def deliver_pending(self, session: Session) -> int:
        """On connect: the newest open delivery per target, in issue order (`Router`),
        then the Releases the site owes (`Releaser`). Returns messages sent."""
        sent = await self._router.deliver_pending(session)
        # From here a cancel's Release goes straight out (`Releaser.for_dispatch`); one
        # committed before is in what `for_session` reads next.
        session.caught_up = True
        return sent + await self._releaser.for_session(session)

    async def on_release_notified(self, dispatch_id: UUID) -> int:
        """A dispatch was cancelled on some replica (NOTIFY): send the Releases of the
        sites whose stream this replica holds. Returns Releases sent."""
        return await self._releaser.for_dispatch(dispatch_id)

    # -- cancel --------------------------------------------------------------------------

    async def cancel(self, dispatch_id: UUID, reason: str | None) -> DispatchView:
        """The operator's cancel (`cancel.decide`): pending deliveries end ``cancelled``,
        the others go ``cancelling`` and their gateways get a Release. A repeat answers
        the same; an ended dispatch raises ConflictError naming its state."""
        now = self._clock()
        after = AfterCommit(self._metrics)
        async with self._engine.begin() as conn:
            locked = await repo.lock_with_deliveries(conn, dispatch_id)
            if locked is None:
                raise NotFoundError(f"unknown dispatch {dispatch_id}", field="dispatch_id")
            outcome = cancelling.decide(locked, now, reason)
            if isinstance(outcome, cancelling.CancelRefused):
                raise ConflictError(
                    f"dispatch {dispatch_id} is {outcome.state}: it has ended, nothing is "
                    "left to cancel",
                    field="state",
                )
            if isinstance(outcome, cancelling.Cancel):
                await cancelling.store(conn, locked, outcome, now, reason)
                for t in outcome.transitions:
                    after.transition(t)
        after.run()
        if isinstance(outcome, cancelling.Cancel):
            log_event(
                log,
                "dispatch_cancel",
                dispatch_id=dispatch_id,
                reason=reason,
                releasing=list(outcome.releasing),
            )
            if outcome.releasing:
                await self._releaser.for_dispatch(dispatch_id)
        return await self.get(dispatch_id)

    # -- acks ----------------------------------------------------------------------------

    async def on_ack(self, session: Session, ack: Ack) -> AckOutcome:
        """Apply a gateway's ack; idempotent (a repeat or a backwards move changes
        nothing: `AckIgnored`)."""
        now = self._clock()
        after = AfterCommit(self._metrics)
        async with self._engine.begin() as conn:
            # One transaction, read once: the locked dispatch, then its deliveries and
            # targets; then the writes (targets, delivery, dispatch, events) in one
            # statement. Four round trips with BEGIN and COMMIT, however many assets.
            locked = await repo.lock_with_deliveries(conn, ack.setpoint_id)
            outcome = apply_ack(locked, session.site_id, session.assets, ack, now)
            if isinstance(outcome, AckApplied):
                moved = outcome.transition
                await write(conn, moved, targets=outcome.targets, events=outcome.events)
                if moved is not None:
                    after.transition(moved)
        after.run()
        self._count(session, ack, outcome, now)
        return outcome

    def _count(self, session: Session, ack: Ack, outcome: AckOutcome, now: datetime) -> None:
        """Metrics and log lines of an ack's outcome (after commit)."""
        if outcome.foreign:
            self._metrics.acks_ignored.labels("foreign_asset").inc()
            log_event(
                log,
                "ack_foreign_asset",
                level=logging.WARNING,
                site_id=session.site_id,
                setpoint_id=ack.setpoint_id,
                asset_ids=list(outcome.foreign[:10]),
            )
        if isinstance(outcome, AckIgnored):
            self._metrics.acks_ignored.labels(outcome.why).inc()
            if outcome.why == "unknown_setpoint":
                log_event(
                    log,
                    "ack_ignored",
                    level=logging.WARNING,
                    site_id=session.site_id,
                    setpoint_id=ack.setpoint_id,
                    why="unknown setpoint for this site",
                )
        elif outcome.sent_at is not None:
            self._metrics.ack_latency.observe(max(0.0, (now - outcome.sent_at).total_seconds()))

    # -- housekeeping and queries --------------------------------------------------------

    async def sweep(self) -> int:
        """End overdue deliveries (`Sweeper`). Returns deliveries ended."""
        return await self._sweeper.sweep()

    async def measure(self) -> int:
        """Measure delivered power of applied dispatches that are due (`DeliveredMeter`)."""
        return await self._meter.measure()

    async def get(self, dispatch_id: UUID) -> DispatchView:
        """One dispatch with deliveries, targets and events; NotFound when unknown."""
        async with self._read.connect() as conn:
            found = await views.view(conn, dispatch_id)
        if found is None:
            raise NotFoundError(f"unknown dispatch {dispatch_id}", field="dispatch_id")
        return found

    async def search(
        self, *, asset_id: str | None, site_id: str | None, state: str | None, limit: int
    ) -> list[DispatchView]:
        """Dispatches, newest first."""
        async with self._read.connect() as conn:
            return await views.search(
                conn, asset_id=asset_id, site_id=site_id, state=state, limit=limit
            )


__all__ = ["DispatchService", "DispatchTiming"]
