"""GET /health, /ready, /metrics, /gateways."""

from __future__ import annotations

from litestar import Controller, Response, get

from ..db.session_repo import GatewayKey, gateway_key
from ..errors import UnavailableError
from ..metrics import CONTENT_TYPE
from .deps import GatewaysDep, HeadendDep
from .paging import DEFAULT_LIMIT, CursorQuery, LimitQuery, pager
from .problems import problem_responses
from .schemas import GatewayPage, gateway_out


class OpsController(Controller):
    """Liveness, readiness, metrics and the gateways' connection states."""

    tags = ["operations"]  # noqa: RUF012

    @get("/health", opt={"public": True})
    async def health(self) -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @get("/ready", opt={"public": True}, responses=problem_responses(503))
    async def ready(self, headend: HeadendDep) -> dict[str, object]:
        """Readiness: database reachable and gRPC listening; 503 otherwise."""
        problems = await headend.ready()
        if problems:
            raise UnavailableError("; ".join(problems))
        return {"status": "ready", "grpc_port": headend.grpc_port}

    @get("/metrics", media_type=CONTENT_TYPE, responses=problem_responses(401))
    async def metrics(self, headend: HeadendDep) -> Response[bytes]:
        """Prometheus text exposition."""
        return Response(await headend.metrics.render(), media_type=CONTENT_TYPE)

    @get("/gateways", responses=problem_responses(400, 401, 422))
    async def gateways(
        self,
        gateways: GatewaysDep,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> GatewayPage:
        """Connected and known gateways: every registered site by site id, a page at a
        time, with its session (live on this replica, else as stored)."""
        page = pager("gateways", GatewayKey, limit=limit, cursor=cursor)
        found = await gateways.list_gateways(after=page.after, limit=page.fetch)
        rows, next_cursor = page.page(found, gateway_key)
        return GatewayPage(items=[gateway_out(g) for g in rows], next=next_cursor)
