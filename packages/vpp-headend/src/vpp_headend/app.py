"""The Litestar application: `create_app(settings)`; its lifespan owns the headend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from ._version import __version__
from .api.dispatch import DispatchController
from .api.ops import OpsController
from .api.problems import EXCEPTION_HANDLERS
from .api.registry import RegistryController
from .api.telemetry import TelemetryController
from .headend import Headend
from .settings import Settings


def create_app(
    settings: Settings, headend: Headend | None = None, *, own_headend: bool | None = None
) -> Litestar:
    """The REST app. Without ``headend`` the app creates one and its lifespan starts and
    stops it (engine, ingest writer, gRPC server); with one, the caller owns it unless
    ``own_headend`` hands it over (the lifespan then stops it, starting it if needed)."""
    owned = headend is None if own_headend is None else own_headend
    runtime = headend if headend is not None else Headend(settings)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        if owned and not runtime.started:
            await runtime.start()
        try:
            yield
        finally:
            if owned:
                await runtime.stop()

    def provide_headend() -> Headend:
        return runtime

    app = Litestar(
        route_handlers=[
            RegistryController,
            TelemetryController,
            DispatchController,
            OpsController,
        ],
        dependencies={"headend": Provide(provide_headend, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="VPP headend", version=__version__, path="/schema"),
        logging_config=None,
        debug=False,
    )
    app.state.headend = runtime
    return app


__all__ = ["create_app"]
