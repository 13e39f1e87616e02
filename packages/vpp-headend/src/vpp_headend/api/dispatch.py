"""POST /dispatch, POST /dispatch/{dispatch_id}/cancel, GET /dispatch/{dispatch_id},
GET /dispatches."""

from __future__ import annotations

from typing import Annotated, get_args
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from ..db.dispatch_views import DispatchKey, dispatch_key
from ..domain import DispatchState
from ..errors import NotFoundError, ValidationFailedError
from .bodies import CancelBody, DispatchBody, cancel_reason, dispatch_request
from .deps import DispatchDep, NowDep, SettingsDep
from .dispatch_out import DispatchOut, DispatchPage, dispatch_out, dispatch_summary_out
from .dto import JsonBody
from .openapi import OptionalBodyOperation
from .paging import DEFAULT_LIMIT, CursorQuery, LimitQuery, pager
from .params import AssetIdQuery, SiteIdQuery
from .problems import problem_responses

STATES = get_args(DispatchState)


class DispatchController(Controller):
    """Power dispatches to an asset, a site or a group."""

    tags = ["dispatch"]  # noqa: RUF012

    @post(
        "/dispatch",
        status_code=202,
        summary="Create a dispatch",
        description=(
            "Body: exactly one of asset_id / site_id / group_id, power_kw (finite, kW, "
            "+ export / discharge), optional ttl_s or expires_at (delivery deadline), "
            "optional duration_s or ends_at (time in force once applied; at most "
            "max_duration_s, 7 days by default). An Idempotency-Key header "
            "returns the original dispatch on a retry. 422 names the offending field; 404 "
            "for an unknown target."
        ),
        dto=JsonBody[DispatchBody],
        return_dto=None,
        opt={"role": "operator"},
        responses=problem_responses(400, 401, 403, 404, 409, 415, 422),
    )
    async def create(
        self,
        dispatch: DispatchDep,
        settings: SettingsDep,
        now: NowDep,
        data: JSONBody[DispatchBody | None] = None,
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> Response[DispatchOut]:
        """Validate, create and route; 202 with the dispatch."""
        if data is None:
            raise ValidationFailedError("body must be a JSON object", field="body")
        req = dispatch_request(
            data,
            idempotency_key=idempotency_key,
            now=now,
            default_ttl_s=settings.default_ttl_s,
            max_ttl_s=settings.max_ttl_s,
            max_duration_s=settings.max_duration_s,
        )
        view, created = await dispatch.create(req)
        headers = {"Location": f"/dispatch/{view.dispatch_id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(dispatch_out(view), status_code=202, headers=headers)

    @post(
        "/dispatch/{dispatch_id:str}/cancel",
        status_code=202,
        summary="Cancel a dispatch",
        description=(
            'Body: empty, {} or {"reason": "…"}, sent as Content-Type: application/json '
            "(415 otherwise, so that a cross-origin form cannot cancel). A pending dispatch "
            "becomes cancelled and is never delivered; a sent or applied one becomes "
            "cancelling, its gateways get a Release and their RELEASED acks make it "
            "cancelled. 202 with the dispatch; a repeat answers the same. 409 for a "
            "dispatch that has ended (completed, failed, rejected, expired, superseded, "
            "released), naming its state; 404 for an unknown one."
        ),
        dto=JsonBody[CancelBody],
        return_dto=None,
        operation_class=OptionalBodyOperation,
        opt={"role": "operator"},
        responses=problem_responses(400, 401, 403, 404, 409, 415, 422),
    )
    async def cancel(
        self,
        dispatch: DispatchDep,
        dispatch_id: FromPath[str],
        data: JSONBody[CancelBody | None] = None,
    ) -> Response[DispatchOut]:
        """Cancel; 202 with the dispatch (state ``cancelling`` or ``cancelled``)."""
        reason = cancel_reason(data)
        view = await dispatch.cancel(dispatch_uuid(dispatch_id), reason)
        return Response(dispatch_out(view), status_code=202)

    @get("/dispatch/{dispatch_id:str}", responses=problem_responses(400, 401, 404))
    async def get_one(self, dispatch: DispatchDep, dispatch_id: FromPath[str]) -> DispatchOut:
        """State, each transition with its time, per-site deliveries and per-asset acks;
        what was requested, allocated (taken by the devices), short, and delivered
        (measured from telemetry after it was applied), per dispatch and per asset."""
        return dispatch_out(await dispatch.get(dispatch_uuid(dispatch_id)))

    @get("/dispatches", responses=problem_responses(400, 401, 422))
    async def search(
        self,
        dispatch: DispatchDep,
        asset_id: AssetIdQuery = None,
        site_id: SiteIdQuery = None,
        state_filter: Annotated[
            str | None,
            QueryParameter(name="state", description=f"one of {', '.join(STATES)}"),
        ] = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> DispatchPage:
        """Dispatches, newest first (by issued_at), a page at a time; a dispatch created
        while the pages are walked appears on none of the later pages."""
        if state_filter is not None and state_filter not in STATES:
            raise ValidationFailedError(f"state must be one of {', '.join(STATES)}", field="state")
        page = pager(
            "dispatches",
            DispatchKey,
            limit=limit,
            cursor=cursor,
            asset_id=asset_id,
            site_id=site_id,
            state=state_filter,
        )
        views = await dispatch.search(
            asset_id=asset_id,
            site_id=site_id,
            state=state_filter,
            limit=page.fetch,
            after=page.after,
        )
        rows, next_cursor = page.page(views, dispatch_key)
        return DispatchPage(items=[dispatch_summary_out(v) for v in rows], next=next_cursor)


def dispatch_uuid(dispatch_id: str) -> UUID:
    """The path's dispatch id; 404 for one that is not a UUID (it names nothing)."""
    try:
        return UUID(dispatch_id)
    except ValueError:
        raise NotFoundError(f"unknown dispatch {dispatch_id[:80]!r}", field="dispatch_id") from None
