"""GET /health, /ready, /metrics, /gateways."""

from __future__ import annotations

from litestar import Controller, Response, get

from ..errors import UnavailableError
from ..metrics import CONTENT_TYPE
from .deps import GatewaysDep, HeadendDep
from .problems import problem_responses
from .schemas import GatewayOut, gateway_out


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

    @get("/gateways", responses=problem_responses(401))
    async def gateways(self, gateways: GatewaysDep) -> list[GatewayOut]:
        """Connected and known gateways (every registered site)."""
        return [gateway_out(g) for g in await gateways.list_gateways()]
