"""The Litestar application: `create_app(settings)`; its lifespan owns the headend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import Message, Scope

from ._version import __version__
from .api.body import require_json
from .api.dispatch import DispatchController
from .api.ops import OpsController
from .api.problems import EXCEPTION_HANDLERS
from .api.registry import RegistryController
from .api.telemetry import TelemetryController
from .api.timing import request_timing
from .auth import SECURITY_HEADERS, STRICT_CSP, auth_guard
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
        guards=[auth_guard, require_json],
        middleware=[request_timing(runtime.metrics.http_requests)],
        before_send=[security_headers],
        openapi_config=OpenAPIConfig(
            title="VPP headend",
            version=__version__,
            path="/schema",
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="`vpp-headend tokens create --role viewer|operator`",
                    )
                }
            ),
            security=[{"BearerToken": []}],
        ),
        logging_config=None,
        debug=False,
    )
    app.state.headend = runtime
    return app


async def security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the security headers on every HTTP response, errors and
    routing 404s included. No CORS headers are ever added: browsers on other origins
    cannot read the API's responses."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
    if not scope["path"].startswith("/schema"):
        headers["Content-Security-Policy"] = STRICT_CSP


__all__ = ["create_app"]
