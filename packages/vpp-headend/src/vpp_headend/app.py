"""The Litestar application: `create_app(settings)`; its lifespan owns the headend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ._version import __version__
from .api.dispatch import DispatchController
from .api.ops import OpsController
from .api.problems import EXCEPTION_HANDLERS
from .api.registry import RegistryController
from .api.telemetry import TelemetryController
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
        guards=[auth_guard],
        middleware=[security_headers],
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


def security_headers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: the security headers on every HTTP response, errors included.

    No CORS headers are ever added: browsers on other origins cannot call the API.
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        strict = not scope["path"].startswith("/schema")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                if strict:
                    headers.append((b"content-security-policy", STRICT_CSP.encode()))
                message = {**message, "headers": headers}  # type: ignore[assignment]
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


__all__ = ["create_app"]
