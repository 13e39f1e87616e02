"""`Creator`: how a POST /dispatch runs — an Idempotency-Key seen before, the hot path in
one statement, else planned from the registry and written in a transaction (`create`
builds and writes the rows)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from uuid import UUID

from sqlalchemy.exc import IntegrityError

from ..db import dispatch_repo as repo
from ..db import dispatch_routing as routing
from ..db import dispatch_views as views
from ..domain import DispatchRequest, DispatchView
from ..errors import ConflictError
from ..logs import log_event
from ..sessions import Session
from . import create as creating
from .delivery import Router
from .deps import DispatchDeps
from .effects import AfterCommit
from .planning import Plan, Planner, connected_plan

log = logging.getLogger("vpp_headend.dispatch")


class Creator:
    """Creates dispatches and routes their deliveries (`Router`)."""

    def __init__(
        self,
        deps: DispatchDeps,
        router: Router,
        *,
        envelope_max_age_s: float,
        get: Callable[[UUID], Awaitable[DispatchView]],
    ) -> None:
        self._engine = deps.engine
        self._read = deps.read
        self._sessions = deps.sessions
        self._metrics = deps.metrics
        self._clock = deps.clock
        self._new_id = deps.new_id
        self._router = router
        self._get = get  # the dispatch as stored (after a late send)
        self._planner = Planner(
            deps.registry, self._online, deps.envelopes, max_age_s=envelope_max_age_s
        )

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
        return await self._get(dispatch_id) if late else view

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
            return here | await routing.connected_sites(conn, site_ids)


__all__ = ["Creator"]
