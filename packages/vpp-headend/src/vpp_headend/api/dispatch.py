"""POST /dispatch, GET /dispatch/{dispatch_id}, GET /dispatches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, get_args
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from ..domain import DispatchState
from ..errors import NotFoundError, ValidationFailedError
from .deps import HeadendDep
from .dto import JsonBody
from .params import AssetIdQuery, SiteIdQuery
from .problems import problem_responses
from .schemas import (
    DispatchBody,
    DispatchOut,
    DispatchSummaryOut,
    dispatch_out,
    dispatch_request,
    dispatch_summary_out,
)

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
            "+ export / discharge), optional ttl_s or expires_at. An Idempotency-Key header "
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
        headend: HeadendDep,
        data: JSONBody[DispatchBody | None] = None,
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> Response[DispatchOut]:
        """Validate, create and route; 202 with the dispatch."""
        if data is None:
            raise ValidationFailedError("body must be a JSON object", field="body")
        s = headend.settings
        req = dispatch_request(
            data,
            idempotency_key=idempotency_key,
            now=datetime.now(UTC),
            default_ttl_s=s.default_ttl_s,
            max_ttl_s=s.max_ttl_s,
        )
        view, created = await headend.dispatch.create(req)
        headers = {"Location": f"/dispatch/{view.dispatch_id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(dispatch_out(view), status_code=202, headers=headers)

    @get("/dispatch/{dispatch_id:str}", responses=problem_responses(400, 401, 404))
    async def get_one(self, headend: HeadendDep, dispatch_id: FromPath[str]) -> DispatchOut:
        """State, each transition with its time, per-site deliveries and per-asset acks;
        what was requested, allocated (taken by the devices), short, and delivered
        (measured from telemetry after it was applied), per dispatch and per asset."""
        try:
            uid = UUID(dispatch_id)
        except ValueError:
            raise NotFoundError(
                f"unknown dispatch {dispatch_id[:80]!r}", field="dispatch_id"
            ) from None
        return dispatch_out(await headend.dispatch.get(uid))

    @get("/dispatches", responses=problem_responses(400, 401, 422))
    async def search(
        self,
        headend: HeadendDep,
        asset_id: AssetIdQuery = None,
        site_id: SiteIdQuery = None,
        state_filter: Annotated[
            str | None,
            QueryParameter(name="state", description=f"one of {', '.join(STATES)}"),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> list[DispatchSummaryOut]:
        """Dispatches, newest first."""
        if state_filter is not None and state_filter not in STATES:
            raise ValidationFailedError(f"state must be one of {', '.join(STATES)}", field="state")
        views = await headend.dispatch.search(
            asset_id=asset_id, site_id=site_id, state=state_filter, limit=limit
        )
        return [dispatch_summary_out(v) for v in views]
