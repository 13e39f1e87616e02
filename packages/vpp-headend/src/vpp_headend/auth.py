"""Bearer tokens for the REST API: roles, hashing, and the Litestar guard.

A token is ``vpp_<token_id>_<secret>`` with 256 random bits of secret; only its SHA-256 is
stored (a fast hash is enough for a high-entropy secret: there is nothing to brute-force).
Roles: ``viewer`` reads, ``operator`` reads and dispatches.

Enforcement (`Settings.rest_auth`): ``auto`` requires a token as soon as one active token
exists, ``required`` always. ``/health``, ``/ready`` and the OpenAPI document under
``/schema`` stay open (probes and clients need them); ``/metrics`` needs a viewer token
when auth is on, because it names assets. Missing or unknown token → 401, too weak a
role → 403.

A token's role is looked up once per ``token_cache_s`` (`TokenCache`), not per request:
each lookup is a database round trip, which under load waits a turn of a busy event loop
(docs/decisions.md, "POST /dispatch in few round trips"). So a revoked token keeps
working for at most that long, on every replica.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

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


#: ``lookup(token_sha256)``: (role of the active token with that hash or None, whether
#: any active token exists) — `security_repo.role_of` on an engine.
RoleLookup = Callable[[str], Awaitable[tuple[str | None, bool]]]
_CACHE_MAX = 1024


class TokenCache:
    """Token lookups remembered for at most ``ttl_s`` (bounded staleness).

    Cached: a known, active token's answer, and the answer for "no token" (whether auth
    is enforced). An unknown token is looked up every time, so a token just created works
    at once and guessing fills no memory. A revoked token, and the open API once the
    first token exists, take effect within ``ttl_s``.
    """

    def __init__(
        self,
        lookup: RoleLookup,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = _CACHE_MAX,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._clock = clock
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, str | None, bool]] = OrderedDict()

    async def role_of(self, token_sha256: str) -> tuple[str | None, bool]:
        """(role of the active token with this hash or None, whether any active token
        exists); ``""`` for no token."""
        now = self._clock()
        hit = self._entries.get(token_sha256)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1], hit[2]
        role, any_active = await self._lookup(token_sha256)
        if role is not None or not token_sha256:
            self._entries[token_sha256] = (now, role, any_active)
            self._entries.move_to_end(token_sha256)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        else:
            self._entries.pop(token_sha256, None)
        return role, any_active


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
    role, any_active = await headend.tokens.role_of(hash_token(token) if token else "")
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
    "RoleLookup",
    "TokenCache",
    "auth_guard",
    "hash_token",
    "new_token",
]
