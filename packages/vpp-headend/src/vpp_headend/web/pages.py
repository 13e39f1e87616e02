"""The console's read-only pages (fleet, site, asset, alerts) and sign-in / sign-out."""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery, QueryParameter
from litestar.response import Redirect

from ..api.body import FORM_OPT
from ..api.params import AssetIdPath, SiteIdPath
from ..auth import PUBLIC_OPT, identify, role_of_token
from ..errors import NotFoundError, ValidationFailedError
from ..limits import MAX_ID_CHARS
from . import views
from .common import caller, context, fleet_cache, headend_of
from .render import page
from .session import cleared_cookie, is_secure, safe_next, session_cookie

#: How many of an asset's dispatches its page lists.
ASSET_DISPATCHES = 20
_FORM = Body(media_type=RequestEncodingType.URL_ENCODED)


class ConsolePages(Controller):
    """Fleet, site, asset and alerts pages; every one needs a viewer."""

    include_in_schema = False
    opt = {PUBLIC_OPT: True}  # noqa: RUF012  # the console checks the caller itself

    @get("/")
    async def root(self) -> Redirect:
        return Redirect("/ui/", status_code=303)

    @get("/ui/")
    async def fleet(
        self,
        request: Request[Any, Any, Any],
        show: FromQuery[str | None] = None,
        find: FromQuery[str | None] = None,
        page_no: Annotated[str | None, QueryParameter(name="page")] = None,
    ) -> Response[str]:
        who = await caller(request)
        query = fleet_query(show, find, page_no)
        headend = headend_of(request)
        fleet = views.fleet_page(await fleet_cache(request).rows(headend), query)
        return page(
            "fleet.html",
            **context(request, who, fleet=fleet, find_max=MAX_ID_CHARS, nav="fleet"),
        )

    @get("/ui/sites/{site_id:str}")
    async def site(self, request: Request[Any, Any, Any], site_id: SiteIdPath) -> Response[str]:
        who = await caller(request)
        headend = headend_of(request)
        sp = await views.site_page(headend, site_id, headend.clock())
        return page("site.html", **context(request, who, sp=sp, nav="fleet"))

    @get("/ui/assets/{asset_id:str}")
    async def asset(self, request: Request[Any, Any, Any], asset_id: AssetIdPath) -> Response[str]:
        who = await caller(request)
        headend = headend_of(request)
        asset = await headend.registry.get_asset(asset_id)
        try:
            _, reading = await headend.telemetry.latest(asset_id)
        except NotFoundError:
            reading = None
        recent = await headend.dispatch.search(
            asset_id=asset_id, site_id=None, state=None, limit=ASSET_DISPATCHES
        )
        return page(
            "asset.html",
            **context(request, who, asset=asset, reading=reading, recent=recent, nav="fleet"),
        )

    @get("/ui/alerts")
    async def alerts(self, request: Request[Any, Any, Any]) -> Response[str]:
        who = await caller(request)
        headend = headend_of(request)
        rows = await fleet_cache(request).rows(headend)
        found = await views.alerts(headend, rows, headend.clock())
        troubled = []
        for state in ("failed", "expired", "rejected", "partially_applied"):
            troubled += await headend.dispatch.search(
                asset_id=None, site_id=None, state=state, limit=20
            )
        troubled.sort(key=lambda d: d.issued_at, reverse=True)
        return page(
            "alerts.html",
            **context(request, who, alerts=found, troubled=troubled, nav="alerts"),
        )


class SignIn(Controller):
    """Sign-in with a bearer token; sign-out."""

    include_in_schema = False
    opt = {PUBLIC_OPT: True}  # noqa: RUF012

    @get("/ui/sign-in")
    async def form(
        self, request: Request[Any, Any, Any], next: FromQuery[str | None] = None
    ) -> Response[str]:
        who = await identify(request)
        return page(
            "signin.html", who=None, next=safe_next(next), error=None, enforced=who.enforced
        )

    @post("/ui/sign-in", opt={FORM_OPT: True}, status_code=303)
    async def sign_in(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, str], _FORM],
    ) -> Response[Any]:
        token = (data.get("token") or "").strip()
        target = safe_next(data.get("next"))
        role = await role_of_token(request, token)
        if role is None:
            return page(
                "signin.html",
                401,
                who=None,
                next=target,
                error="That token is unknown or revoked.",
                enforced=True,
            )
        response: Response[Any] = Redirect(target, status_code=303)
        response.set_cookie(session_cookie(token, secure=is_secure(request)))
        return response

    @post("/ui/sign-out", opt={FORM_OPT: True}, status_code=303)
    async def sign_out(self, request: Request[Any, Any, Any]) -> Response[Any]:
        response: Response[Any] = Redirect("/ui/sign-in", status_code=303)
        response.set_cookie(cleared_cookie(secure=is_secure(request)))
        return response


def fleet_query(show: str | None, find: str | None, page_no: str | None) -> views.FleetQuery:
    """The fleet page's query string, checked: a bad value is a 422 page naming it."""
    if show not in (None, "", "all", "problems"):
        raise ValidationFailedError(f"show must be all or problems, not {show!r}", field="show")
    find = (find or "").strip()
    if len(find) > MAX_ID_CHARS or not find.isprintable():  # no site id is longer
        raise ValidationFailedError(
            f"find must be at most {MAX_ID_CHARS} printable characters", field="find"
        )
    number = 1
    if page_no not in (None, ""):
        if not re.fullmatch(r"[0-9]{1,9}", page_no) or int(page_no) < 1:
            raise ValidationFailedError(
                f"page must be a whole number from 1, not {page_no!r}", field="page"
            )
        number = int(page_no)
    return views.FleetQuery("problems" if show == "problems" else "all", find, number)


__all__ = ["ConsolePages", "SignIn", "fleet_query"]
