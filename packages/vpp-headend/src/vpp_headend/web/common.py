"""What every console handler shares: who is asking, and the pages for refusals."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.response import Redirect
from litestar.types import ExceptionHandlersMap

from ..auth import Caller, Role, identify
from ..errors import HeadendError
from ..headend import Headend
from .render import page
from .views import FleetCache

#: Where the app's state keeps the console's `FleetCache`.
_FLEET_CACHE = "console_fleet_cache"


class SignInRequired(Exception):
    """The page needs a token the request does not carry (handled: 303 to sign-in)."""


class RoleTooWeak(Exception):
    """The signed-in token's role may not do this (handled: a 403 page)."""

    def __init__(self, need: Role, caller: Caller) -> None:
        super().__init__(f"this needs the {need} role; you are signed in as {caller.role}")


async def caller(request: Request[Any, Any, Any], need: Role = "viewer") -> Caller:
    """The request's caller, when it may see a page that needs ``need``."""
    who = await identify(request)
    if who.may(need):
        return who
    if who.role is None:
        raise SignInRequired
    raise RoleTooWeak(need, who)


def headend_of(request: Request[Any, Any, Any]) -> Headend:
    """The running headend the app serves."""
    headend: Headend = request.app.state.headend
    return headend


def fleet_cache(request: Request[Any, Any, Any]) -> FleetCache:
    """The app's one `FleetCache` (made on first use), as fresh as the live feed:
    ``events_interval_s``."""
    state = request.app.state
    cache: FleetCache | None = state.get(_FLEET_CACHE)
    if cache is None:
        cache = state.setdefault(
            _FLEET_CACHE, FleetCache(headend_of(request).settings.events_interval_s)
        )
    return cache


def context(request: Request[Any, Any, Any], who: Caller, **extra: Any) -> dict[str, Any]:
    """The template context every page gets: the caller and the current path."""
    return {
        "who": who,
        "may_dispatch": who.may("operator"),
        "path": request.url.path,
        **extra,
    }


def _sign_in(request: Request[Any, Any, Any], _: SignInRequired) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"/ui/sign-in?next={quote(target, safe='/')}", status_code=303)


def _forbidden(request: Request[Any, Any, Any], exc: RoleTooWeak) -> Response[Any]:
    return page("error.html", 403, title="Not allowed", message=str(exc), who=None)


def _error(request: Request[Any, Any, Any], exc: HeadendError) -> Response[Any]:
    return page("error.html", exc.http_status, title=exc.title, message=exc.detail, who=None)


#: The console router's exception handlers: HTML answers, not problem JSON.
HANDLERS: ExceptionHandlersMap = {
    SignInRequired: _sign_in,
    RoleTooWeak: _forbidden,
    HeadendError: _error,
}

__all__ = [
    "HANDLERS",
    "RoleTooWeak",
    "SignInRequired",
    "caller",
    "context",
    "fleet_cache",
    "headend_of",
]
