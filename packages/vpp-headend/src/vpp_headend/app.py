"""The Litestar application: `create_app(settings)`; its lifespan owns the headend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TypeAlias

from litestar import Litestar
from litestar.datastructures import MutableScopeHeaders, State
from litestar.di import NamedDependency, Provide
from litestar.types import Message, Scope

from ._version import __version__
from .api.body import require_json
from .api.dispatch import DispatchController
from .api.events import EventsController
from .api.openapi import SCHEMA_CSP, openapi_config, static_router
from .api.ops import OpsController
from .api.problems import EXCEPTION_HANDLERS
from .api.registry import RegistryController
from .api.sites import SitesController
from .api.telemetry import TelemetryController
from .api.timing import request_timing
from .auth import CONSOLE_CSP, SECURITY_HEADERS, STRICT_CSP, auth_guard
from .dispatch import DispatchService
from .events import EventFeed
from .gateways import GatewayService
from .headend import Headend
from .metrics import Metrics
from .registry import Registry
from .settings import Settings
from .telemetry_queries import TelemetryQueries
from .web import console_router


def create_app(settings: Settings, headend: Headend | None = None) -> Litestar:
    """The REST app. Without ``headend`` its lifespan opens one on ``settings`` (engine,
    ingest writer, gRPC server) and closes it at shutdown; a given one stays the caller's."""
    metrics = headend.metrics if headend is not None else Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if headend is not None:
            yield
            return
        async with Headend.open(settings, metrics=metrics) as opened:
            app.state.headend = opened
            yield

    app = Litestar(
        route_handlers=[
            RegistryController,
            SitesController,
            TelemetryController,
            DispatchController,
            OpsController,
            EventsController,
            console_router(),
            static_router(),
        ],
        dependencies=dependencies(),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        guards=[auth_guard, require_json],
        middleware=[request_timing(metrics.http_requests)],
        before_send=[security_headers],
        openapi_config=openapi_config(__version__),
        logging_config=None,
        debug=False,
    )
    if headend is not None:
        app.state.headend = headend
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
    path = scope["path"]
    if path == "/schema" or path.startswith("/schema/"):
        headers["Content-Security-Policy"] = SCHEMA_CSP
    elif path == "/" or path == "/ui" or path.startswith("/ui/"):
        headers["Content-Security-Policy"] = CONSOLE_CSP
    else:
        headers["Content-Security-Policy"] = STRICT_CSP


#: The running headend, as the providers below receive it (named ``headend``).
Running: TypeAlias = NamedDependency[Headend]


def _headend(state: State) -> Headend:
    headend: Headend = state.headend
    return headend


def _dispatch(headend: Running) -> DispatchService:
    return headend.dispatch


def _gateways(headend: Running) -> GatewayService:
    return headend.gateways


def _registry(headend: Running) -> Registry:
    return headend.registry


def _telemetry(headend: Running) -> TelemetryQueries:
    return headend.telemetry


def _events(headend: Running) -> EventFeed:
    return headend.events


def _settings(headend: Running) -> Settings:
    return headend.settings


def _now(headend: Running) -> datetime:
    return headend.clock()


def dependencies() -> dict[str, Provide]:
    """The controllers' named dependencies (`api/deps.py`), from the running headend."""
    providers: dict[str, Callable[..., object]] = {
        "headend": _headend,
        "dispatch": _dispatch,
        "gateways": _gateways,
        "registry": _registry,
        "telemetry": _telemetry,
        "events": _events,
        "settings": _settings,
        "now": _now,
    }
    return {name: Provide(fn, sync_to_thread=False) for name, fn in providers.items()}


__all__ = ["create_app"]
