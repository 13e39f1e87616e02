"""Gateway messages in: which body a frame carries, Register → `RegisterRequest` and
SetpointAck → `Ack`; what no stored column or log line may hold is refused or cleaned."""

from __future__ import annotations

from uuid import UUID

from vpp_protocol.sitefile import ID_PATTERN
from vpp_protocol.upb import pb

from ..domain import (
    Ack,
    AckStateName,
    Allocation,
    AssetClaim,
    LimitReasonName,
    RegisterRequest,
    ReleaseCauseName,
)
from ..errors import ProtocolViolationError
from ..limits import MAX_AGENT_VERSION_CHARS, MAX_ID_CHARS, MAX_REASON_CHARS
from ..logs import escape_controls
from .readings import sane_kw, timestamp

_KIND_NAMES = {
    pb.ASSET_KIND_PV: "pv",
    pb.ASSET_KIND_BESS: "bess",
    pb.ASSET_KIND_METER: "meter",
    pb.ASSET_KIND_GENSET: "genset",
    pb.ASSET_KIND_EV_CHARGER: "ev_charger",
    pb.ASSET_KIND_LOAD: "load",
    pb.ASSET_KIND_OTHER: "other",
}
_ACK_STATES: dict[int, AckStateName] = {
    pb.ACK_STATE_RECEIVED: "received",
    pb.ACK_STATE_APPLIED: "applied",
    pb.ACK_STATE_FAILED: "failed",
    pb.ACK_STATE_REJECTED: "rejected",
    pb.ACK_STATE_EXPIRED: "expired",
    pb.ACK_STATE_RELEASED: "released",
}
# RELEASE_CAUSE_UNSPECIFIED (0) and values this headend does not know read as "not said".
_RELEASE_CAUSES: dict[int, ReleaseCauseName] = {
    pb.RELEASE_CAUSE_DURATION_ENDED: "duration_ended",
    pb.RELEASE_CAUSE_CANCELLED: "cancelled",
    pb.RELEASE_CAUSE_FAILSAFE: "failsafe",
}
# LIMIT_REASON_UNSPECIFIED (0) and values this headend does not know read as "no reason".
_LIMIT_REASONS: dict[int, LimitReasonName] = {
    pb.LIMIT_REASON_AVAILABLE_POWER: "available_power",
    pb.LIMIT_REASON_STATE_OF_CHARGE: "state_of_charge",
    pb.LIMIT_REASON_MIN_STABLE_LOAD: "min_stable_load",
    pb.LIMIT_REASON_DEVICE_FAULT: "device_fault",
    pb.LIMIT_REASON_DEVICE_TIMEOUT: "device_timeout",
    pb.LIMIT_REASON_LIMITS: "limits",
    pb.LIMIT_REASON_DEVICE_REDUCED: "device_reduced",
}

#: The request type grpclib decodes incoming frames into.
AgentFrame = pb.AgentMessage


def body_kind(frame: pb.AgentMessage) -> str | None:
    """Which body an AgentMessage carries (None when empty)."""
    kind: str | None = frame.WhichOneof("body")
    return kind


def _opt(msg: pb.AssetDescriptor, name: str) -> float | None:
    return float(getattr(msg, name)) if msg.HasField(name) else None


def register_from_pb(msg: pb.Register, max_assets: int = 1_000) -> RegisterRequest:
    """Register → `RegisterRequest`; a malformed site id or too many assets is a violation.

    The site id (NUL included) is refused here: the stream gets INVALID_ARGUMENT. Asset
    claims pass through as sent; the registry rejects a bad one alone (code ``invalid``,
    `registry.authorize_in`) so that the valid assets of the same Register are served.
    """
    if not ID_PATTERN.fullmatch(msg.site_id):
        raise ProtocolViolationError(
            f"Register.site_id {msg.site_id[:80]!r} is not a valid id "
            "(1 to 64 of A-Z a-z 0-9 . _ -, no control characters)"
        )
    if len(msg.assets) > max_assets:
        raise ProtocolViolationError(
            f"Register claims {len(msg.assets)} assets; the limit is {max_assets} per Register"
        )
    claims = tuple(
        AssetClaim(
            asset_id=a.asset_id,
            kind=_KIND_NAMES.get(a.kind, "other"),
            capacity_kw=_opt(a, "capacity_kw"),
            min_kw=_opt(a, "min_kw"),
            max_kw=_opt(a, "max_kw"),
            energy_kwh=_opt(a, "energy_kwh"),
            credential=a.credential,
        )
        for a in msg.assets
    )
    if not claims and msg.asset_id and not ID_PATTERN.fullmatch(msg.asset_id):
        raise ProtocolViolationError(f"Register.asset_id {msg.asset_id[:80]!r} is not a valid id")
    return RegisterRequest(
        site_id=msg.site_id,
        claims=claims,
        # Shown in GET /gateways and logs, stored in gateway_sessions (text takes no NUL).
        agent_version=_clean_text(msg.agent_version, MAX_AGENT_VERSION_CHARS),
        protocol_version=msg.protocol_version,
        legacy_asset_id="" if claims else msg.asset_id,
    )


def ack_from_pb(msg: pb.SetpointAck, default_asset_id: str) -> Ack:
    """SetpointAck → `Ack`; a bad id or an unknown state is a protocol violation.

    Asset ids with control characters (NUL included) are refused: an id is matched, not
    shown. The free-text ``reason`` is kept readable instead: `_clean_text` strips the
    NUL padding devices leave (Modbus string registers) and escapes other control and
    format characters, so the stored text says what was there (PostgreSQL text takes no
    NUL; a raw one failed the ack's whole transaction).
    """
    try:
        setpoint_id = UUID(msg.setpoint_id)
    except ValueError:
        raise ProtocolViolationError(
            f"SetpointAck.setpoint_id {msg.setpoint_id[:80]!r} is not a UUID"
        ) from None
    ids = [("asset_id", msg.asset_id)]
    ids += [("allocations.asset_id", a.asset_id) for a in msg.allocations]
    for name, value in ids:
        if len(value) > MAX_ID_CHARS:
            raise ProtocolViolationError(
                f"SetpointAck.{name} {value[:80]!r}... is over {MAX_ID_CHARS} chars"
            )
        if not value.isprintable():  # NUL, control and format characters
            raise ProtocolViolationError(
                f"SetpointAck.{name} {value!r} contains control characters"
            )
    state = _ACK_STATES.get(msg.state)
    if state is None:
        raise ProtocolViolationError(f"SetpointAck.state {msg.state} is not a known ack state")
    return Ack(
        setpoint_id=setpoint_id,
        asset_id=msg.asset_id or default_asset_id,
        state=state,
        reason=_clean_text(msg.reason, MAX_REASON_CHARS),
        ts=timestamp(msg.ts.seconds, msg.ts.nanos) if msg.HasField("ts") else None,
        applied_kw=_opt_kw(msg, "applied_kw"),
        allocations=tuple(
            Allocation(
                a.asset_id,
                a.power_kw,
                applied_kw=_opt_kw(a, "applied_kw"),
                limit_reason=_LIMIT_REASONS.get(a.limit_reason),
                limit_detail=_clean_text(a.limit_detail, MAX_REASON_CHARS),
            )
            for a in msg.allocations
            if a.asset_id and sane_kw(a.power_kw)
        ),
        clamped=msg.clamped,
        requested_kw=_opt_kw(msg, "requested_kw"),
        shortfall_kw=_opt_kw(msg, "shortfall_kw"),
        limit_reason=_LIMIT_REASONS.get(msg.limit_reason),
        limit_detail=_clean_text(msg.limit_detail, MAX_REASON_CHARS),
        release_cause=_RELEASE_CAUSES.get(msg.release_cause) if state == "released" else None,
        ends_at=(
            timestamp(msg.ends_at.seconds, msg.ends_at.nanos) if msg.HasField("ends_at") else None
        ),
    )


def _opt_kw(msg: pb.SetpointAck | pb.Allocation, name: str) -> float | None:
    """An optional power field of an ack: None when unset, not finite or beyond
    ±`MAX_ABS_KW` (a value no column should hold is dropped, the ack is kept)."""
    if not msg.HasField(name):
        return None
    value = float(getattr(msg, name))
    return value if sane_kw(value) else None


def _clean_text(text: str, limit: int) -> str:
    """Free text from the wire as it may be stored and shown: at most ``limit`` chars,
    trailing NUL padding stripped, other control/format characters escaped as in the
    logs (`logs.escape_controls`: ``\\x00``, ``\\n``, ``\\u202e``) so that what was sent
    stays visible."""
    text = text[:limit].rstrip("\x00")
    if text.isprintable():
        return text
    out: list[str] = []
    size = 0
    for ch in text:
        ch = escape_controls(ch)
        size += len(ch)
        if size > limit:  # never cut an escape in half
            break
        out.append(ch)
    return "".join(out)


__all__ = ["AgentFrame", "ack_from_pb", "body_kind", "register_from_pb"]
