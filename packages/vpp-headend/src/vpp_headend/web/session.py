"""The console's session: sign-in sets the bearer token as a cookie; same-origin posts.

The cookie holds the token the operator typed (`auth.SESSION_COOKIE`): HttpOnly (no
script reads it), SameSite=Strict (no other site's page sends it), Secure behind TLS,
and scoped to the whole headend so the console's own calls to the JSON API and
``/events`` carry it. The API's guard accepts it wherever it accepts the header.

Form posts (sign-in, sign-out, dispatch, cancel) are ``x-www-form-urlencoded``, which a
page on another origin can also send; besides SameSite, each must come from the
headend's own origin (`same_origin`): browsers send ``Sec-Fetch-Site`` (or at least
``Origin``) with every POST.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from ..auth import SESSION_COOKIE

#: How long a browser keeps the session cookie (the token's revocation still applies).
SESSION_MAX_AGE_S = 12 * 3600


def session_cookie(token: str, *, secure: bool) -> Cookie:
    """The cookie a successful sign-in sets."""
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        path="/",
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        secure=secure,
        samesite="strict",
    )


def cleared_cookie(*, secure: bool) -> Cookie:
    """The cookie sign-out sets: empty and expired."""
    return Cookie(
        key=SESSION_COOKIE,
        value="",
        path="/",
        max_age=0,
        httponly=True,
        secure=secure,
        samesite="strict",
    )


def is_secure(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the browser reached the headend over HTTPS (directly or via a proxy that
    says so in ``X-Forwarded-Proto``)."""
    forwarded = connection.headers.get("x-forwarded-proto", "")
    return connection.url.scheme == "https" or forwarded.lower() == "https"


def same_origin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for the console's form posts: 403 unless the browser says the request
    comes from the headend's own pages.

    ``Sec-Fetch-Site`` first (every current browser sends it, and a proxy in front does
    not change it); without it, ``Origin`` must name the host the browser asked for:
    ``Host``, or ``X-Forwarded-Host`` behind a proxy that rewrites ``Host``."""
    if connection.scope.get("method") != "POST":
        return
    fetch_site = connection.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site == "same-origin":
            return
        raise PermissionDeniedException("this form must be sent from the headend's own console")
    origin = connection.headers.get("origin")
    if origin is not None and origin != "null":
        netloc = urlsplit(origin).netloc.lower()
        hosts = {
            connection.headers.get("host", "").lower(),
            connection.headers.get("x-forwarded-host", "").split(",")[0].strip().lower(),
        }
        if netloc and netloc in hosts:
            return
    raise PermissionDeniedException("this form must be sent from the headend's own console")


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a path on this headend (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


__all__ = [
    "SESSION_MAX_AGE_S",
    "cleared_cookie",
    "is_secure",
    "safe_next",
    "same_origin",
    "session_cookie",
]
