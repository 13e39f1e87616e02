"""Request parsing and response shapes of the REST API (msgspec structs)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar
from uuid import UUID

import msgspec

from ..db.telemetry_repo import RollupMinute
from ..domain import (
    Asset,
    DispatchRequest,
    DispatchView,
    GatewayView,
    LatestReading,
    Site,
    TargetKind,
    status_name,
)
from ..errors import ValidationFailedError
from ..limits import MAX_ABS_KW
from .body import decode_json
from .params import ID_REGEX, in_words

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Id = Annotated[str, msgspec.Meta(pattern=ID_REGEX)]
_TARGETS: tuple[TargetKind, ...] = ("asset", "site", "group")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
S = TypeVar("S", bound=msgspec.Struct)


class DispatchBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /dispatch: exactly one of asset_id / site_id / group_id; ttl_s or expires_at
    (delivery deadline); duration_s or ends_at (time in force once applied)."""

    power_kw: float
    asset_id: Id | None = None
    site_id: Id | None = None
    group_id: Id | None = None
    ttl_s: float | None = None
    expires_at: AwareDatetime | None = None
    duration_s: float | None = None
    ends_at: AwareDatetime | None = None


class CancelBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /dispatch/{dispatch_id}/cancel: an optional reason, kept with the dispatch
    and sent to the gateway with the Release."""

    reason: str | None = None


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


# -- responses ---------------------------------------------------------------------------


class AssetOut(msgspec.Struct):
    asset_id: str
    site_id: str
    kind: str
    capacity_kw: float | None
    min_kw: float | None
    max_kw: float | None
    energy_kwh: float | None


class SiteOut(msgspec.Struct):
    site_id: str
    groups: list[str]
    asset_ids: list[str]
    capacity_kw: float
    legacy: bool
    telemetry_interval_s: float | None


class SiteDetailOut(SiteOut):
    assets: list[AssetOut] = msgspec.field(default_factory=list)


class TelemetryOut(msgspec.Struct):
    asset_id: str
    site_id: str
    ts: datetime
    received_at: datetime
    seq: int
    power_kw: float
    soc_pct: float | None
    status: str
    setpoint_kw: float | None
    setpoint_id: str | None
    lag_s: float
    # The live envelope (DESIGN.md §3a); null when the gateway did not report it.
    available_min_kw: float | None
    available_max_kw: float | None
    min_stable_kw: float | None
    setpoint_ends_at: datetime | None


class ReadingOut(msgspec.Struct):
    seq: int
    ts: datetime
    received_at: datetime
    power_kw: float
    soc_pct: float | None
    status: str
    setpoint_kw: float | None
    setpoint_id: str | None
    available_min_kw: float | None
    available_max_kw: float | None
    min_stable_kw: float | None
    setpoint_ends_at: datetime | None


class HistoryOut(msgspec.Struct):
    asset_id: str
    start: datetime | None
    end: datetime | None
    limit: int
    count: int
    readings: list[ReadingOut]


class MinuteOut(msgspec.Struct):
    """One UTC minute of an asset's readings (``telemetry_1m``)."""

    minute: datetime
    count: int
    min_power_kw: float
    avg_power_kw: float
    max_power_kw: float
    last_soc_pct: float | None


class RollupOut(msgspec.Struct):
    asset_id: str
    start: datetime | None
    end: datetime | None
    limit: int
    count: int
    minutes: list[MinuteOut]


class TargetRef(msgspec.Struct):
    kind: str
    id: str


class DeliveryOut(msgspec.Struct):
    site_id: str
    power_kw: float  # this site's share (requested of it)
    state: str
    sent_at: datetime | None
    updated_at: datetime
    reason: str | None
    allocated_kw: float | None = None  # what its devices took
    shortfall_kw: float | None = None  # power_kw minus allocated_kw; 0 when met
    applied_at: datetime | None = None
    # Time in force (DESIGN.md §3b): when its control ends by the gateway's clock (from
    # its APPLIED ack; null: no end or not said); a cancel's release: when it was asked,
    # when a Release last went out, when the gateway released, and why
    # (duration_ended | cancelled | failsafe; null when not said).
    in_force_until: datetime | None = None
    release_requested_at: datetime | None = None
    release_sent_at: datetime | None = None
    released_at: datetime | None = None
    release_cause: str | None = None


class AllocationOut(msgspec.Struct):
    asset_id: str
    site_id: str
    allocation_kw: float | None  # allocated to it by the split
    state: str
    applied_kw: float | None  # what the device set
    clamped: bool
    reason: str | None
    updated_at: datetime
    limit_reason: str | None = None  # why applied_kw falls short of allocation_kw
    limit_detail: str | None = None
    delivered_kw: float | None = None  # mean measured power after it was applied


class EventOut(msgspec.Struct):
    at: datetime
    state: str
    scope: str
    scope_id: str | None
    detail: str | None


class DispatchOut(msgspec.Struct):
    dispatch_id: UUID
    state: str
    target: TargetRef
    power_kw: float
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime
    deliveries: list[DeliveryOut]
    allocations: list[AllocationOut]
    transitions: list[EventOut]
    events: list[EventOut]
    split: str | None = None
    # What was delivered (DESIGN.md §3a): requested = power_kw; allocated: what the
    # devices took; shortfall: requested - allocated (0 when met); delivered: measured
    # from telemetry in the window after it was applied (null until measured).
    requested_kw: float | None = None
    allocated_kw: float | None = None
    shortfall_kw: float | None = None
    delivered_kw: float | None = None
    applied_at: datetime | None = None
    measured_at: datetime | None = None
    # Time in force as asked (one of them, or neither: until superseded, cancelled or
    # released) and the operator's cancel.
    duration_s: float | None = None
    ends_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    cancel_reason: str | None = None


class DispatchSummaryOut(msgspec.Struct):
    dispatch_id: UUID
    state: str
    target: TargetRef
    power_kw: float
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime
    deliveries: list[DeliveryOut]
    duration_s: float | None = None
    ends_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    # What was delivered, as in DispatchOut (null until known).
    requested_kw: float | None = None
    allocated_kw: float | None = None
    shortfall_kw: float | None = None
    delivered_kw: float | None = None
    measured_at: datetime | None = None


class GatewayOut(msgspec.Struct):
    site_id: str
    connected: bool
    connected_since: datetime | None
    last_seen: datetime | None
    assets_served: list[str]
    remote: str | None
    agent_version: str | None
    epoch: int | None
    session_id: UUID | None
    disconnect_reason: str | None


def asset_out(a: Asset) -> AssetOut:
    return AssetOut(a.asset_id, a.site_id, a.kind, a.capacity_kw, a.min_kw, a.max_kw, a.energy_kwh)


def site_out(s: Site, *, detail: bool = False) -> SiteOut:
    common: dict[str, Any] = {
        "site_id": s.site_id,
        "groups": list(s.groups),
        "asset_ids": [a.asset_id for a in s.assets],
        "capacity_kw": s.capacity_kw,
        "legacy": s.legacy,
        "telemetry_interval_s": s.telemetry_interval_s,
    }
    if detail:
        return SiteDetailOut(**common, assets=[asset_out(a) for a in s.assets])
    return SiteOut(**common)


def telemetry_out(r: LatestReading, site_id: str, now: datetime) -> TelemetryOut:
    return TelemetryOut(
        asset_id=r.asset_id,
        site_id=site_id,
        ts=r.ts,
        received_at=r.received_at,
        seq=r.seq,
        power_kw=r.power_kw,
        soc_pct=r.soc_pct,
        status=status_name(r.status),
        setpoint_kw=r.setpoint_kw,
        setpoint_id=r.setpoint_id,
        lag_s=round(max(0.0, (now - r.ts).total_seconds()), 3),
        available_min_kw=r.available_min_kw,
        available_max_kw=r.available_max_kw,
        min_stable_kw=r.min_stable_kw,
        setpoint_ends_at=r.setpoint_ends_at,
    )


def minute_out(m: RollupMinute) -> MinuteOut:
    return MinuteOut(
        minute=m.bucket,
        count=m.n,
        min_power_kw=m.min_power_kw,
        avg_power_kw=m.avg_power_kw,
        max_power_kw=m.max_power_kw,
        last_soc_pct=m.last_soc_pct,
    )


def reading_out(r: LatestReading) -> ReadingOut:
    return ReadingOut(
        seq=r.seq,
        ts=r.ts,
        received_at=r.received_at,
        power_kw=r.power_kw,
        soc_pct=r.soc_pct,
        status=status_name(r.status),
        setpoint_kw=r.setpoint_kw,
        setpoint_id=r.setpoint_id,
        available_min_kw=r.available_min_kw,
        available_max_kw=r.available_max_kw,
        min_stable_kw=r.min_stable_kw,
        setpoint_ends_at=r.setpoint_ends_at,
    )


def _deliveries(v: DispatchView) -> list[DeliveryOut]:
    return [
        DeliveryOut(
            x.site_id,
            x.power_kw,
            x.state,
            x.sent_at,
            x.updated_at,
            x.reason,
            x.allocated_kw,
            x.shortfall_kw,
            x.applied_at,
            x.in_force_until,
            x.release_requested_at,
            x.release_sent_at,
            x.released_at,
            x.release_cause,
        )
        for x in v.deliveries
    ]


def dispatch_out(v: DispatchView) -> DispatchOut:
    events = [EventOut(e.at, e.state, e.scope, e.scope_id, e.detail) for e in v.events]
    return DispatchOut(
        dispatch_id=v.dispatch_id,
        state=v.state,
        target=TargetRef(v.target_kind, v.target_id),
        power_kw=v.power_kw,
        issued_at=v.issued_at,
        expires_at=v.expires_at,
        updated_at=v.updated_at,
        deliveries=_deliveries(v),
        allocations=[
            AllocationOut(
                t.asset_id,
                t.site_id,
                t.allocation_kw,
                t.state,
                t.applied_kw,
                t.clamped,
                t.reason,
                t.updated_at,
                t.limit_reason,
                t.limit_detail,
                t.delivered_kw,
            )
            for t in v.targets
        ],
        transitions=[e for e in events if e.scope == "dispatch"],
        events=events,
        split=v.detail,
        requested_kw=v.requested_kw,
        allocated_kw=v.allocated_kw,
        shortfall_kw=v.shortfall_kw,
        delivered_kw=v.delivered_kw,
        applied_at=v.applied_at,
        measured_at=v.measured_at,
        duration_s=v.duration_s,
        ends_at=v.ends_at,
        cancel_requested_at=v.cancel_requested_at,
        cancel_reason=v.cancel_reason,
    )


def dispatch_summary_out(v: DispatchView) -> DispatchSummaryOut:
    return DispatchSummaryOut(
        dispatch_id=v.dispatch_id,
        state=v.state,
        target=TargetRef(v.target_kind, v.target_id),
        power_kw=v.power_kw,
        issued_at=v.issued_at,
        expires_at=v.expires_at,
        updated_at=v.updated_at,
        deliveries=_deliveries(v),
        duration_s=v.duration_s,
        ends_at=v.ends_at,
        cancel_requested_at=v.cancel_requested_at,
        requested_kw=v.requested_kw,
        allocated_kw=v.allocated_kw,
        shortfall_kw=v.shortfall_kw,
        delivered_kw=v.delivered_kw,
        measured_at=v.measured_at,
    )


def gateway_out(g: GatewayView) -> GatewayOut:
    return GatewayOut(
        site_id=g.site_id,
        connected=g.connected,
        connected_since=g.connected_since,
        last_seen=g.last_seen,
        assets_served=list(g.assets_served),
        remote=g.remote,
        agent_version=g.agent_version,
        epoch=g.epoch,
        session_id=g.session_id,
        disconnect_reason=g.disconnect_reason,
    )
