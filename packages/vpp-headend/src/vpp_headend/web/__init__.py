"""The operator console (DESIGN.md §5a): server-rendered pages at ``/`` and ``/ui/``,
their static assets at ``/ui/static/``, all shipped in this wheel (no CDN, no Node
build). docs/decisions.md "Operator console" says why it is built this way."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.static_files import create_static_files_router

from ..auth import PUBLIC_OPT
from .common import HANDLERS
from .dispatch_pages import DispatchPages
from .pages import ConsolePages, SignIn
from .session import same_origin

STATIC_DIR = Path(__file__).parent / "static"


def console_router() -> Router:
    """Every console route: pages, sign-in, static assets."""
    static = create_static_files_router(
        path="/ui/static",
        directories=[STATIC_DIR],
        name="console-static",
        opt={PUBLIC_OPT: True},
        include_in_schema=False,
    )
    return Router(
        path="/",
        route_handlers=[ConsolePages, SignIn, DispatchPages, static],
        guards=[same_origin],
        exception_handlers=HANDLERS,
        include_in_schema=False,
    )


__all__ = ["STATIC_DIR", "console_router"]
