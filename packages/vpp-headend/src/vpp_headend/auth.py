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
from dataclasses import dataclass
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
#: The console's session cookie: the bearer token the operator signed in with, HttpOnly
#: and SameSite=Strict (web/session.py), accepted wherever the header is.
SESSION_COOKIE = "vpp_session"
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
    """The request's token: the Authorization header's bearer token, else the console's
    session cookie (`SESSION_COOKIE`); None when neither is sent, "" when malformed."""
    header = connection.headers.get("authorization")
    if not header:
        cookie = connection.cookies.get(SESSION_COOKIE)
        if cookie is None:
            return None
        return cookie if 0 < len(cookie) <= 200 else ""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > 200:
        return ""
    return value


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the role of its token (None: no token or an unknown one),
    whether a token was sent, and whether tokens are enforced at all."""

    role: Role | None
    token_sent: bool
    enforced: bool

    def may(self, need: Role) -> bool:
        """True when the request may do what needs ``need`` (always, when not enforced)."""
        if not self.enforced:
            return True
        return self.role is not None and _RANK[self.role] >= _RANK[need]


async def identify(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The `Caller` of a request (one `TokenCache` lookup)."""
    headend = connection.app.state.headend
    token = _bearer(connection)
    role, any_active = await headend.tokens.role_of(hash_token(token) if token else "")
    enforced = headend.settings.rest_auth == "required" or any_active
    return Caller(role=role, token_sent=token is not None, enforced=enforced)


async def role_of_token(connection: ASGIConnection[Any, Any, Any, Any], token: str) -> Role | None:
    """The role of an active token (the console's sign-in), None for an unknown one."""
    if not token or len(token) > 200:
        return None
    role, _ = await connection.app.state.headend.tokens.role_of(hash_token(token))
    return role  # type: ignore[no-any-return]


async def auth_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Litestar guard run for every route: 401 / 403 unless the request may go on."""
    if handler.opt.get(PUBLIC_OPT) or connection.url.path.startswith(PUBLIC_PREFIXES):
        return
    need: Role = handler.opt.get(ROLE_OPT, "viewer")
    caller = await identify(connection)
    if caller.may(need):
        return
    if not caller.token_sent:
        raise NotAuthorizedException("a bearer token is required", headers=_CHALLENGE)
    if caller.role is None:
        raise NotAuthorizedException("the bearer token is unknown or revoked", headers=_CHALLENGE)
    raise PermissionDeniedException(f"this needs the {need} role; the token is {caller.role}")


#: Sent with every response (a response that sets its own Cache-Control keeps it: the
#: vendored /schema/static files are cacheable). The Content-Security-Policy is chosen
#: per path (app.security_headers): `CONSOLE_CSP` for the console, api.openapi.SCHEMA_CSP
#: for /schema (its UIs are served from the wheel), `STRICT_CSP` everywhere else.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STRICT_CSP = "default-src 'none'; frame-ancestors 'none'"
#: The console's pages (/, /ui/): their own scripts, styles and event stream only; no
#: inline script or style, forms post back to the headend only.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


__all__ = [
    "CONSOLE_CSP",
    "PUBLIC_OPT",
    "ROLES",
    "ROLE_OPT",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "STRICT_CSP",
    "Caller",
    "Role",
    "RoleLookup",
    "TokenCache",
    "auth_guard",
    "hash_token",
    "identify",
    "new_token",
    "role_of_token",
]
