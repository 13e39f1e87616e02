"""`DispatchService`: the dispatch lifecycle's one entry point (DESIGN.md §4).

A thin composition: `creator` runs a create (`planning` decides the deliveries, `create`
writes them), `delivery` routes and sends, `acks` and `transitions` decide what an ack
changes, `cancel` decides what a cancel changes, `release` sends Releases, `expiry`
sweeps, `measure` measures delivered power. This module runs the ack and cancel
transactions and owns the background task (sweep, then measure, every
``sweep_interval_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from uuid import UUID

from ..ack_retry import AckRetry
from ..db import dispatch_repo as repo
from ..db import dispatch_views as views
from ..domain import Ack, DispatchRequest, DispatchView
from ..errors import ConflictError, NotFoundError
from ..logs import log_event
from ..sessions import Session
from . import cancel as cancelling
from .acks import AckApplied, AckIgnored, AckOutcome, apply_ack
from .creator import Creator
from .delivery import Router
from .deps import DispatchDeps, DispatchTiming
from .effects import AfterCommit, write
from .expiry import Sweeper
from .measure import DeliveredMeter
from .release import Releaser

log = logging.getLogger("vpp_headend.dispatch")


class DispatchService:
    """Creates dispatches and moves them through their lifecycle."""

    def __init__(self, deps: DispatchDeps, timing: DispatchTiming) -> None:
        self._engine = deps.engine
        self._read = deps.read
        self._metrics = deps.metrics
        self._interval = timing.sweep_interval_s
        self._clock = deps.clock
        grace = timedelta(seconds=timing.ack_grace_s)
        self._router = Router(deps, ack_grace=grace)
        self._creator = Creator(
            deps, self._router, envelope_max_age_s=timing.envelope_max_age_s, get=self.get
        )
        self._sweeper = Sweeper(deps, ack_grace=grace)
        self._releaser = Releaser(deps)
        self._meter = DeliveredMeter(
            deps,
            window=timedelta(seconds=timing.delivery_window_s),
            settle=timedelta(seconds=timing.delivery_settle_s),
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
        the original dispatch with created=False (`Creator`)."""
        return await self._creator.create(req)

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
            # Read once, write once: the round trips stay four however many assets.
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
        self,
        *,
        asset_id: str | None,
        site_id: str | None,
        state: str | None,
        limit: int,
        after: views.DispatchKey | None = None,
    ) -> list[DispatchView]:
        """Dispatches, newest first, at most ``limit``; ``after``: older than that key."""
        async with self._read.connect() as conn:
            return await views.search(
                conn, asset_id=asset_id, site_id=site_id, state=state, limit=limit, after=after
            )


__all__ = ["DispatchService"]
