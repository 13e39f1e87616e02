"""The console's dispatch pages: the form and list, one dispatch, its cancel button.

The form goes through the same validation as POST /dispatch (`api.bodies`), so the
message shown next to a field is the API's own; a form field's text that is not a
number is refused here first, naming the field the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect

from ..api.bodies import DispatchBody, dispatch_request, to_struct
from ..api.body import FORM_OPT
from ..api.dispatch import dispatch_uuid
from ..api.dispatch_out import dispatch_out
from ..api.paging import CursorQuery, pager
from ..auth import PUBLIC_OPT
from ..db.dispatch_views import DispatchKey, dispatch_key
from ..domain.dispatch import IN_FLIGHT_STATES, SETTLED_STATES
from ..errors import HeadendError, NotFoundError, ValidationFailedError
from .common import caller, context, headend_of
from .render import page

_FORM = Body(media_type=RequestEncodingType.URL_ENCODED)
TARGET_TYPES = ("asset", "site", "group")
#: The dispatches the list shows per page.
PAGE_SIZE = 50
#: API field → the form field its message is shown next to.
_FORM_FIELD = {
    "asset_id": "target_id",
    "site_id": "target_id",
    "group_id": "target_id",
    "power_kw": "power_kw",
    "ttl_s": "ttl_s",
    "expires_at": "ttl_s",
    "duration_s": "duration_s",
    "ends_at": "duration_s",
}
#: States in which the operator may still cancel (the API answers 409 for the rest).
CANCELLABLE = IN_FLIGHT_STATES | SETTLED_STATES


@dataclass
class DispatchForm:
    """The form's values as typed, and the error per field."""

    target_type: str = "site"
    target_id: str = ""
    power_kw: str = ""
    ttl_s: str = ""
    duration_s: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: dict[str, str]) -> DispatchForm:
        def text(name: str) -> str:
            return str(data.get(name, "")).strip()[:200]

        return cls(
            target_type=text("target_type") or "site",
            target_id=text("target_id"),
            power_kw=text("power_kw"),
            ttl_s=text("ttl_s"),
            duration_s=text("duration_s"),
        )


def _number(form: DispatchForm, name: str, *, required: bool) -> float | None:
    text = getattr(form, name)
    if not text:
        if required:
            raise ValidationFailedError(f"{name} is required", field=name)
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValidationFailedError(f"{name} must be a number", field=name) from None
    if not math.isfinite(value):
        raise ValidationFailedError(f"{name} must be a finite number", field=name)
    return value


def _body(form: DispatchForm) -> DispatchBody:
    if form.target_type not in TARGET_TYPES:
        raise ValidationFailedError("choose asset, site or group", field="target_type")
    if not form.target_id:
        raise ValidationFailedError("target id is required", field="target_id")
    raw: dict[str, object] = {
        f"{form.target_type}_id": form.target_id,
        "power_kw": _number(form, "power_kw", required=True),
    }
    for name in ("ttl_s", "duration_s"):
        value = _number(form, name, required=False)
        if value is not None:
            raw[name] = value
    return to_struct(raw, DispatchBody)


class DispatchPages(Controller):
    """/ui/dispatch (form and list), /ui/dispatch/{id}, its cancel."""

    include_in_schema = False
    opt = {PUBLIC_OPT: True}  # noqa: RUF012  # the console checks the caller itself

    @get("/ui/dispatch")
    async def index(
        self, request: Request[Any, Any, Any], cursor: CursorQuery = None
    ) -> Response[str]:
        who = await caller(request)
        return await self._index(request, who, DispatchForm(), 200, cursor)

    async def _index(
        self,
        request: Request[Any, Any, Any],
        who: Any,
        form: DispatchForm,
        status: int,
        cursor: str | None = None,
    ) -> Response[str]:
        headend = headend_of(request)
        # The API's own pages: a cursor from GET /dispatches works here and back.
        paging = pager(
            "dispatches",
            DispatchKey,
            limit=PAGE_SIZE,
            cursor=cursor,
            asset_id=None,
            site_id=None,
            state=None,
        )
        found = await headend.dispatch.search(
            asset_id=None, site_id=None, state=None, limit=paging.fetch, after=paging.after
        )
        recent, next_cursor = paging.page(found, dispatch_key)
        return page(
            "dispatch_list.html",
            status,
            **context(
                request,
                who,
                form=form,
                recent=recent,
                next_cursor=next_cursor,
                target_types=TARGET_TYPES,
                nav="dispatch",
            ),
        )

    @post("/ui/dispatch", opt={FORM_OPT: True})
    async def create(
        self, request: Request[Any, Any, Any], data: Annotated[dict[str, str], _FORM]
    ) -> Response[Any]:
        who = await caller(request, "operator")
        headend = headend_of(request)
        form = DispatchForm.from_data(data)
        try:
            req = dispatch_request(
                _body(form),
                idempotency_key=None,
                now=headend.clock(),
                default_ttl_s=headend.settings.default_ttl_s,
                max_ttl_s=headend.settings.max_ttl_s,
                max_duration_s=headend.settings.max_duration_s,
            )
            view, _ = await headend.dispatch.create(req)
        except (ValidationFailedError, NotFoundError) as exc:
            name = _FORM_FIELD.get(exc.field or "", "target_id" if exc.field else "power_kw")
            form.errors[name] = exc.detail
            return await self._index(request, who, form, exc.http_status)
        return Redirect(f"/ui/dispatch/{view.dispatch_id}", status_code=303)

    @get("/ui/dispatch/{dispatch_id:str}")
    async def one(
        self, request: Request[Any, Any, Any], dispatch_id: FromPath[str]
    ) -> Response[str]:
        who = await caller(request)
        view = await headend_of(request).dispatch.get(dispatch_uuid(dispatch_id))
        return page(
            "dispatch_one.html",
            **context(
                request,
                who,
                d=dispatch_out(view),
                cancellable=view.state in CANCELLABLE and view.cancel_requested_at is None,
                nav="dispatch",
                error=None,
            ),
        )

    @post("/ui/dispatch/{dispatch_id:str}/cancel", opt={FORM_OPT: True})
    async def cancel(
        self, request: Request[Any, Any, Any], dispatch_id: FromPath[str]
    ) -> Response[Any]:
        await caller(request, "operator")
        uuid = dispatch_uuid(dispatch_id)
        try:
            await headend_of(request).dispatch.cancel(uuid, "cancelled from the console")
        except HeadendError as exc:
            if exc.http_status != 409:  # already ended: the page shows its state
                raise
        return Redirect(f"/ui/dispatch/{uuid}", status_code=303)


__all__ = ["DispatchForm", "DispatchPages"]
