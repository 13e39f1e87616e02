"""Request bodies of the REST API (msgspec structs) and the rules msgspec cannot express;
every refusal is a 422 naming the field at fault."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import msgspec

from ..domain import DispatchRequest, TargetKind
from ..errors import ValidationFailedError
from ..limits import MAX_ABS_KW
from .body import decode_json
from .params import ID_REGEX, in_words

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Id = Annotated[str, msgspec.Meta(pattern=ID_REGEX)]
_TARGETS: tuple[TargetKind, ...] = ("asset", "site", "group")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
S = TypeVar("S", bound=msgspec.Struct)


def _about(description: str) -> msgspec.Meta:
    """A field's description in the OpenAPI document (no constraint)."""
    return msgspec.Meta(description=description)


class DispatchBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /dispatch: exactly one of asset_id / site_id / group_id; ttl_s or expires_at
    (delivery deadline); duration_s or ends_at (time in force once applied)."""

    power_kw: Annotated[
        float,
        _about(f"kW: + export / discharge, - import / charge; finite, within ±{MAX_ABS_KW:,.0f}"),
    ]
    asset_id: Annotated[Id, _about("target: one asset (give exactly one target)")] | None = None
    site_id: Annotated[Id, _about("target: a site's assets, sharing the power")] | None = None
    group_id: Annotated[Id, _about("target: a group's sites, sharing the power")] | None = None
    ttl_s: Annotated[float, _about("delivery deadline in s; not with expires_at")] | None = None
    expires_at: Annotated[AwareDatetime, _about("delivery deadline; not with ttl_s")] | None = None
    duration_s: Annotated[float, _about("s in force once applied; not with ends_at")] | None = None
    ends_at: Annotated[AwareDatetime, _about("end of control; not with duration_s")] | None = None


class CancelBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /dispatch/{dispatch_id}/cancel: an optional reason, kept with the dispatch
    and sent to the gateway with the Release."""

    reason: Annotated[str, _about("why, at most 200 printable characters")] | None = None


#: The longest cancel reason taken (the gateway's log and the dispatch keep it).
MAX_CANCEL_REASON_CHARS = 200


def utc(value: datetime, field: str) -> datetime:
    """``value`` in UTC; 422 naming ``field`` when it has no timezone or falls outside
    years 1 to 9999 once in UTC (``9999-12-31T23:59:59-00:01``). Every such instant is
    also within PostgreSQL's ``timestamptz`` range (4713 BC to 294276 AD)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationFailedError(
            f"{field} needs a timezone (e.g. 2026-11-27T10:00:00Z)", field=field
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationFailedError(
            f"{field} is out of range: it must fall within years 1 to 9999 in UTC", field=field
        ) from None


def to_struct(data: object, struct: type[S]) -> S:
    """A decoded JSON body as ``struct`` (strict types; 422 naming the field), with each
    top-level datetime field in UTC (`utc`), so a new one such as ``ends_at`` is covered."""
    if not isinstance(data, dict):
        raise ValidationFailedError("body must be a JSON object", field="body")
    try:
        body = msgspec.convert(data, struct, strict=True)
    except msgspec.ValidationError as exc:
        raise _validation(exc) from None
    in_utc = {
        name: utc(value, name)
        for name in struct.__struct_fields__
        if isinstance(value := getattr(body, name), datetime)
    }
    return msgspec.structs.replace(body, **in_utc) if in_utc else body


def parse_dispatch(
    raw: bytes,
    *,
    idempotency_key: str | None,
    now: datetime,
    default_ttl_s: float,
    max_ttl_s: float,
    max_duration_s: float = 7 * 86400.0,
) -> DispatchRequest:
    """Validate a raw POST /dispatch body (`dispatch_request` on the decoded one)."""
    return dispatch_request(
        to_struct(decode_json(raw), DispatchBody),
        idempotency_key=idempotency_key,
        now=now,
        default_ttl_s=default_ttl_s,
        max_ttl_s=max_ttl_s,
        max_duration_s=max_duration_s,
    )


def dispatch_request(
    body: DispatchBody,
    *,
    idempotency_key: str | None,
    now: datetime,
    default_ttl_s: float,
    max_ttl_s: float,
    max_duration_s: float = 7 * 86400.0,
) -> DispatchRequest:
    """The rules msgspec cannot express; errors name the offending field.

    The delivery deadline never runs past the end of control: with ``ends_at``, a
    setpoint not delivered by then is not worth delivering, so ``expires_at`` is at most
    ``ends_at``."""
    given = [k for k in _TARGETS if getattr(body, f"{k}_id") is not None]
    if len(given) != 1:
        what = "none" if not given else " and ".join(f"{k}_id" for k in given)
        raise ValidationFailedError(
            f"give exactly one of asset_id, site_id, group_id (got {what})",
            field=f"{given[1]}_id" if len(given) > 1 else "asset_id",
        )
    kind = given[0]
    target_id: str = getattr(body, f"{kind}_id")
    if isinstance(body.power_kw, bool) or not math.isfinite(body.power_kw):
        raise ValidationFailedError("power_kw must be a finite number", field="power_kw")
    if abs(body.power_kw) > MAX_ABS_KW:
        raise ValidationFailedError(f"power_kw must be within ±{MAX_ABS_KW:g} kW", field="power_kw")
    if body.ttl_s is not None and body.expires_at is not None:
        raise ValidationFailedError("give ttl_s or expires_at, not both", field="expires_at")
    if body.expires_at is not None:
        expires_at = body.expires_at
        if expires_at <= now:
            raise ValidationFailedError("expires_at must be in the future", field="expires_at")
        if (expires_at - now).total_seconds() > max_ttl_s:
            raise ValidationFailedError(
                f"expires_at must be within {max_ttl_s:g} s from now", field="expires_at"
            )
    else:
        ttl = default_ttl_s if body.ttl_s is None else body.ttl_s
        if not math.isfinite(ttl) or ttl <= 0:
            raise ValidationFailedError("ttl_s must be a positive number of seconds", field="ttl_s")
        if ttl > max_ttl_s:
            raise ValidationFailedError(f"ttl_s must be at most {max_ttl_s:g}", field="ttl_s")
        expires_at = now + timedelta(seconds=ttl)
    duration_s, ends_at = _time_in_force(body, now, max_duration_s)
    if ends_at is not None:
        expires_at = min(expires_at, ends_at)
    _check_idempotency_key(idempotency_key)
    return DispatchRequest(
        target_kind=kind,
        target_id=target_id,
        power_kw=float(body.power_kw),
        expires_at=expires_at,
        idempotency_key=idempotency_key,
        duration_s=duration_s,
        ends_at=ends_at,
    )


def _time_in_force(
    body: DispatchBody, now: datetime, max_s: float
) -> tuple[float | None, datetime | None]:
    """``duration_s`` (finite, > 0, at most ``max_s``) or ``ends_at`` (in the future,
    within ``max_s`` from now), not both; neither: in force until superseded, cancelled
    or released by the fail-safe."""
    if body.duration_s is not None and body.ends_at is not None:
        raise ValidationFailedError("give duration_s or ends_at, not both", field="ends_at")
    if body.duration_s is not None:
        d = body.duration_s
        if isinstance(d, bool) or not math.isfinite(d) or d <= 0:
            raise ValidationFailedError(
                "duration_s must be a positive number of seconds", field="duration_s"
            )
        if d > max_s:
            raise ValidationFailedError(
                f"duration_s must be at most {max_s:g} s", field="duration_s"
            )
        return float(d), None
    if body.ends_at is not None:
        if body.ends_at <= now:
            raise ValidationFailedError("ends_at must be in the future", field="ends_at")
        if (body.ends_at - now).total_seconds() > max_s:
            raise ValidationFailedError(
                f"ends_at must be within {max_s:g} s from now", field="ends_at"
            )
        return None, body.ends_at
    return None, None


def cancel_reason(body: CancelBody | None) -> str | None:
    """The reason of a cancel (None when not given or empty); 422 naming ``reason`` for
    one too long or with control characters."""
    reason = body.reason if body is not None else None
    if reason is None or not reason.strip():
        return None
    if len(reason) > MAX_CANCEL_REASON_CHARS:
        raise ValidationFailedError(
            f"reason must be at most {MAX_CANCEL_REASON_CHARS} characters", field="reason"
        )
    if not reason.isprintable():
        raise ValidationFailedError("reason must not contain control characters", field="reason")
    return reason.strip()


def _check_idempotency_key(key: str | None) -> None:
    if key is None:
        return
    if not 1 <= len(key) <= 200:
        raise ValidationFailedError(
            "Idempotency-Key must be 1 to 200 characters", field="Idempotency-Key"
        )
    if _CONTROL.search(key):
        raise ValidationFailedError(
            "Idempotency-Key must not contain control characters", field="Idempotency-Key"
        )


def _validation(exc: msgspec.ValidationError) -> ValidationFailedError:
    msg = str(exc)
    match = re.search(r" - at `\$\.?([^`]*)`$", msg)
    field = match.group(1) if match else None
    if field is None:
        unknown = re.search(r"unknown field `([^`]*)`", msg)
        field = unknown.group(1) if unknown else None
    if field is None:
        missing = re.search(r"missing required field `([^`]*)`", msg)
        field = missing.group(1) if missing else None
    text = msg[: match.start()] if match else msg
    return ValidationFailedError(in_words(text), field=field)
