"""Bearer tokens for the REST API: roles, hashing, and the Litestar guard.

A token is ``vpp_<token_id>_<secret>`` with 256 random bits of secret; only its SHA-256 is
stored (a fast hash is enough for a high-entropy secret: there is nothing to brute-force).
Roles: ``viewer`` reads, ``operator`` reads and dispatches.

Enforcement (`Settings.rest_auth`): ``auto`` requires a token as soon as one active token
exists, ``required`` always. ``/health``, ``/ready`` and the OpenAPI document under
``/schema`` stay open (probes and clients need them); ``/metrics`` needs a viewer token
when auth is on, because it names assets. Missing or unknown token → 401, too weak a
role → 403.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Literal

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from .db import security_repo

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
_RANK = {"viewer": 1, "operator": 2}
#: Route handler ``opt`` key: the least role a route needs; absent means viewer.
ROLE_OPT = "role"
#: Route handler ``opt`` key: True for routes open to everyone.
PUBLIC_OPT = "public"
PUBLIC_PREFIXES = ("/schema",)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="vpp-headend"'}


def new_token() -> tuple[str, str]:
    """(token_id, token): a fresh token and the short id that names it in lists and logs."""
    token_id = secrets.token_hex(4)
    return token_id, f"vpp_{token_id}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """What the database stores for a token (SHA-256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > 200:
        return ""
    return value


async def auth_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Litestar guard run for every route: 401 / 403 unless the request may go on."""
    if handler.opt.get(PUBLIC_OPT) or connection.url.path.startswith(PUBLIC_PREFIXES):
        return
    headend = connection.app.state.headend
    need: Role = handler.opt.get(ROLE_OPT, "viewer")
    token = _bearer(connection)
    role, any_active = await security_repo.role_of(
        headend.reader, hash_token(token) if token else ""
    )
    enforced = headend.settings.rest_auth == "required" or any_active
    if not enforced:
        return
    if token is None:
        raise NotAuthorizedException("a bearer token is required", headers=_CHALLENGE)
    if role is None:
        raise NotAuthorizedException("the bearer token is unknown or revoked", headers=_CHALLENGE)
    if _RANK[role] < _RANK[need]:
        raise PermissionDeniedException(f"this needs the {need} role; the token is {role}")


#: Sent with every response. The OpenAPI pages under /schema load their UI from a CDN,
#: so the strict content security policy is left off there.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"


__all__ = [
    "PUBLIC_OPT",
    "ROLES",
    "ROLE_OPT",
    "SECURITY_HEADERS",
    "STRICT_CSP",
    "Role",
    "auth_guard",
    "hash_token",
    "new_token",
]
