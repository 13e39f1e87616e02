"""The OpenAPI document and its pages under ``/schema``, with nothing fetched from elsewhere.

A control room is often air-gapped: Litestar's default pages load Swagger UI, Redoc, a
favicon and Google fonts from CDNs and stay blank there. Here the UIs come from the
wheel (``web/vendor/``, see its README for versions and checksums), served under
``/schema/static``, and the pages carry no inline script, so ``SCHEMA_CSP`` can allow
scripts from the headend only.

Operation ids and summaries come from `OPERATIONS`, keyed by method and path: the path
is the public API, so an id stays put when a handler is renamed; a route missing there
still gets a readable id and summary (`operation_id`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from litestar import Request, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    YamlRenderPlugin,
)
from litestar.openapi.spec import Components, Operation, RequestBody, SecurityScheme
from litestar.static_files import create_static_files_router
from litestar.types import Method
from litestar.types.internal_types import PathParameterDefinition

from ..auth import PUBLIC_OPT

#: The vendored UI bundles (and their licences) in the wheel.
VENDOR_DIR = Path(__file__).resolve().parent.parent / "web" / "vendor"
SCHEMA_PATH = "/schema"
#: Where `static_router` serves `VENDOR_DIR`: under /schema, so it is public like the
#: document (auth.PUBLIC_PREFIXES) and gets `SCHEMA_CSP`.
STATIC_PATH = f"{SCHEMA_PATH}/static"
SWAGGER_INIT_PATH = "/swagger-init.js"

#: The Content-Security-Policy of every response under /schema: this origin only, and the
#: least both UIs work with (each loosening found by running them in Chromium with it off):
#: - script-src 'self': the bundles and the Swagger start-up script are files, the pages
#:   have no inline script, and neither UI needs eval: no 'unsafe-inline' or 'unsafe-eval';
#: - style-src 'unsafe-inline': Redoc styles itself with styled-components, which writes
#:   <style> elements at run time (Swagger UI alone would do without it);
#: - img-src data:: swagger-ui.css draws its icons as data: SVG images;
#: - connect-src 'self': both fetch /schema/openapi.json; Swagger's "Try it out" calls
#:   the API on this origin;
#: - worker-src blob:: Redoc's search runs in a worker it starts from a blob: URL (without
#:   it, search finds nothing). Only a script already running here can make a blob: URL.
#: Redoc's sidebar also asks for a logo from cdn.redoc.ly: refused here, and it hides it.
SCHEMA_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: "METHOD /path" (path parameters as ``{name}``) → (operationId, summary).
OPERATIONS: dict[str, tuple[str, str]] = {
    "GET /sites": ("listSites", "List sites"),
    "GET /sites/{site_id}": ("getSite", "Get a site"),
    "GET /sites/{site_id}/telemetry": ("getSiteTelemetry", "Newest readings of a site"),
    "GET /sites/{site_id}/rollup": ("getSiteRollup", "One-minute history of a site"),
    "GET /assets": ("listAssets", "List assets"),
    "GET /assets/{asset_id}": ("getAsset", "Get an asset"),
    "GET /telemetry/{asset_id}": ("getLatestTelemetry", "Latest telemetry of an asset"),
    "GET /telemetry/{asset_id}/history": ("getTelemetryHistory", "Telemetry history of an asset"),
    "GET /telemetry/{asset_id}/rollup": ("getTelemetryRollup", "One-minute rollups of an asset"),
    "POST /dispatch": ("createDispatch", "Create a dispatch"),
    "POST /dispatch/{dispatch_id}/cancel": ("cancelDispatch", "Cancel a dispatch"),
    "GET /dispatch/{dispatch_id}": ("getDispatch", "Get a dispatch"),
    "GET /dispatches": ("listDispatches", "List dispatches"),
    "GET /gateways": ("listGateways", "List gateways"),
    "GET /events": ("streamEvents", "Stream live events (server-sent events)"),
    "GET /health": ("getHealth", "Liveness probe"),
    "GET /ready": ("getReady", "Readiness probe"),
    "GET /metrics": ("getMetrics", "Prometheus metrics"),
}
_NOT_LETTERS = re.compile(r"[^A-Za-z]+")


def _words(text: str) -> list[str]:
    return [w for w in _NOT_LETTERS.split(text) if w]


def _camel(words: Sequence[str]) -> str:
    return "".join(w.lower() if i == 0 else w[:1].upper() + w[1:] for i, w in enumerate(words))


def operation_key(
    http_method: str, path_components: Sequence[str | PathParameterDefinition]
) -> str:
    """The `OPERATIONS` key of a route: ``"GET /dispatch/{dispatch_id}"``."""
    parts = [c if isinstance(c, str) else f"{{{c.name}}}" for c in path_components]
    return f"{http_method.upper()} /{'/'.join(parts)}"


def operation_id(
    route_handler: HTTPRouteHandler,
    http_method: Method,
    path_components: list[str | PathParameterDefinition],
) -> str:
    """`OpenAPIConfig.operation_id_creator`: the id from `OPERATIONS`, else one built from
    the method and path (``GET /a/{b_id}/c`` → ``getABByBIdC``), unique as paths are.

    It also gives a handler without a ``summary`` the one from `OPERATIONS` (else its
    name in words): Litestar has no per-operation hook for summaries, and reads the
    handler's right after this call (``litestar/_openapi/path_item.py``). The tests
    check that every operation has one."""
    key = operation_key(http_method, path_components)
    known = OPERATIONS.get(key)
    if route_handler.summary is None:
        name = " ".join(_words(route_handler.handler_name)).capitalize()
        route_handler.summary = known[1] if known is not None else name
    if known is not None:
        return known[0]
    words = [http_method.lower()]
    for c in path_components:
        words += _words(c) if isinstance(c, str) else ["by", *_words(c.name)]
    return _camel(words)


def versioned(url: str, version: str) -> str:
    """``url?v=version``: the query changes with each headend release, so a browser's
    cached copy (kept a day) is never one of an older release."""
    return f"{url}?v={quote(version, safe='')}"


def asset_url(relative: str, version: str) -> str:
    """The URL of a vendored file (`versioned`)."""
    return versioned(f"{STATIC_PATH}/{relative}", version)


def _page(title: str, head: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n{head}</head>\n<body>\n{body}</body>\n</html>\n"
    ).encode()


class SwaggerPage(OpenAPIRenderPlugin):
    """Swagger UI from the vendored bundle. Litestar's SwaggerRenderPlugin inlines its
    start-up script (which the CSP refuses) and the standalone preset (not needed with
    the default layout); this page starts it from `SWAGGER_INIT` instead."""

    def __init__(self, version: str, *, path: str | Sequence[str] = "/swagger") -> None:
        self.js_url = asset_url("swagger-ui/swagger-ui-bundle.js", version)
        self.css_url = asset_url("swagger-ui/swagger-ui.css", version)
        self.init_url = versioned(f"{SCHEMA_PATH}{SWAGGER_INIT_PATH}", version)
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        spec = html.escape(self.get_openapi_json_route(request), quote=True)
        return _page(
            f"{openapi_schema['info']['title']} (Swagger UI)",
            f'<link rel="stylesheet" href="{self.css_url}">\n',
            f'<div id="swagger-ui" data-spec-url="{spec}"></div>\n'
            f'<script src="{self.js_url}"></script>\n<script src="{self.init_url}"></script>\n',
        )

    def receive_router(self, router: Router) -> None:
        router.register(
            get(
                SWAGGER_INIT_PATH,
                media_type="text/javascript",
                sync_to_thread=False,
                include_in_schema=False,
                cache_control=CacheControlHeader(max_age=86400),
            )(swagger_init)
        )


#: What starts Swagger UI on the headend's document. ``validatorUrl: null``: no badge
#: fetched from validator.swagger.io.
SWAGGER_INIT = """\
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
"""


def swagger_init() -> str:
    """GET /schema/swagger-init.js."""
    return SWAGGER_INIT


class RedocPage(OpenAPIRenderPlugin):
    """Redoc from the vendored standalone bundle, which renders the ``<redoc spec-url>``
    element by itself: no inline script, no Google fonts, no CDN favicon."""

    def __init__(self, version: str, *, path: str | Sequence[str] = "/redoc") -> None:
        self.js_url = asset_url("redoc/redoc.standalone.js", version)
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        spec = html.escape(self.get_openapi_json_route(request), quote=True)
        return _page(
            f"{openapi_schema['info']['title']} (Redoc)",
            "",
            f'<redoc spec-url="{spec}"></redoc>\n<script src="{self.js_url}"></script>\n',
        )


@dataclass
class OptionalBodyOperation(Operation):
    """An operation whose body may be left out (``operation_class=`` of its handler):
    Litestar marks every request body required."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False


def openapi_config(version: str) -> OpenAPIConfig:
    """The app's OpenAPI configuration: Redoc at /schema and /schema/redoc, Swagger UI at
    /schema/swagger, the document at /schema/openapi.json (and .yaml)."""
    return OpenAPIConfig(
        title="VPP headend",
        version=version,
        path=SCHEMA_PATH,
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
        operation_id_creator=operation_id,
        render_plugins=[
            RedocPage(version, path=["/redoc", "/"]),
            SwaggerPage(version),
            JsonRenderPlugin(),
            YamlRenderPlugin(),
        ],
    )


def static_router() -> Router:
    """GET /schema/static/…: the vendored files, public and cached for a day (the pages
    name them with a per-release ``?v=``)."""
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[VENDOR_DIR],
        name="schema-static",
        opt={PUBLIC_OPT: True},
        cache_control=CacheControlHeader(max_age=86400),
        include_in_schema=False,
    )


__all__ = [
    "OPERATIONS",
    "SCHEMA_CSP",
    "STATIC_PATH",
    "VENDOR_DIR",
    "OptionalBodyOperation",
    "RedocPage",
    "SwaggerPage",
    "openapi_config",
    "operation_id",
    "static_router",
]
