"""The one edge between wire messages and the headend's domain types.

Both directions use the upb messages (`vpp_protocol.upb`): incoming telemetry goes
straight to COPY row tuples, and an outgoing heartbeat encodes in ~5 µs where the
betterproto2 dataclass took ~75 µs (10,000 gateways send ~670 heartbeats a second).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal, get_args
from uuid import UUID

from vpp_protocol.sitefile import ID_PATTERN
from vpp_protocol.upb import pb

from .domain import (
    Ack,
    AckStateName,
    Allocation,
    AssetClaim,
    CloseReasonName,
    LimitReasonName,
    RegisterReply,
    RegisterRequest,
    ReleaseCauseName,
    ReleaseCommand,
    SetpointCommand,
)
from .errors import ProtocolViolationError
from .limits import MAX_ABS_KW, MAX_AGENT_VERSION_CHARS, MAX_ID_CHARS, MAX_REASON_CHARS
from .logs import escape_controls

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Readings outside these years are refused: they would be typos or unset clocks.
_TS_MIN = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
_TS_MAX = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp())

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
_REJECT_CODES = {
    "unknown_asset": pb.REJECT_CODE_UNKNOWN_ASSET,
    "foreign_asset": pb.REJECT_CODE_FOREIGN_ASSET,
    "duplicate": pb.REJECT_CODE_DUPLICATE,
    "invalid": pb.REJECT_CODE_INVALID,
    "unauthorized": pb.REJECT_CODE_UNAUTHORIZED,
}
_CLOSE_REASONS = {
    "superseded": pb.CLOSE_REASON_SUPERSEDED,
    "server_shutdown": pb.CLOSE_REASON_SERVER_SHUTDOWN,
    "heartbeat_timeout": pb.CLOSE_REASON_HEARTBEAT_TIMEOUT,
    "unauthorized": pb.CLOSE_REASON_UNAUTHORIZED,
    "protocol_error": pb.CLOSE_REASON_PROTOCOL_ERROR,
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
            if a.asset_id and _sane_kw(a.power_kw)
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
    return value if _sane_kw(value) else None


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


def _sane_kw(value: float) -> bool:
    """Finite and within ±`MAX_ABS_KW` (1e308 kW is a bug or an attack, not a reading)."""
    return math.isfinite(value) and abs(value) <= MAX_ABS_KW


def timestamp(seconds: int, nanos: int) -> datetime | None:
    """A protobuf Timestamp as an aware UTC datetime; None when out of the sane range."""
    if not _TS_MIN <= seconds < _TS_MAX or not 0 <= nanos < 1_000_000_000:
        return None
    return _cached_timestamp(seconds, nanos // 1000)


@lru_cache(maxsize=1 << 16)
def _cached_timestamp(seconds: int, micros: int) -> datetime:
    # Readings of one gateway tick share their timestamp, and building a datetime costs
    # more than the rest of a reading's conversion: memoise (bounded, pure).
    return _EPOCH + timedelta(seconds=seconds, microseconds=micros)


#: One telemetry history row, in `vpp_headend.db.models.TELEMETRY_COLUMNS` order.
Row = tuple[
    str,  # asset_id
    int,  # seq
    datetime,  # ts
    datetime,  # received_at
    float,  # power_kw
    float | None,  # soc_pct
    int,  # status
    float | None,  # setpoint_kw
    str | None,  # setpoint_id
    float | None,  # available_min_kw
    float | None,  # available_max_kw
    float | None,  # min_stable_kw
    datetime | None,  # setpoint_ends_at
]

#: Why `reading_row` refused a reading (the ``reason`` of ``vpp_telemetry_rejected_total``).
RejectReason = Literal[
    "seq_out_of_range", "ts_missing", "ts_out_of_range", "power_not_finite", "power_out_of_range"
]
REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)

_SEQ_MAX = 2**63 - 1  # the bigint column; the wire field is uint64
_INT2_MAX = 32767
_isfinite = math.isfinite


def reading_row(r: pb.Telemetry, asset_id: str, received_at: datetime) -> Row | RejectReason:
    """A reading as a COPY row, or why it cannot be stored.

    Every value of a returned row fits its column: a mandatory field out of range refuses
    the reading; an optional one (soc, setpoint, setpoint id, envelope) out of range is
    dropped to None, and a status outside smallint reads as 0 (unspecified). Envelope
    (DESIGN.md §3a): a bound that is not finite or beyond ±`MAX_ABS_KW` is dropped, a
    negative ``min_stable_kw`` too (the wire says >= 0), and ``available_min_kw >
    available_max_kw`` drops both (neither side can be trusted); ``setpoint_ends_at``
    outside 2000..2200 is dropped. On the telemetry hot path (once per reading): one
    combined range test, the reason is worked out only for a refused reading. An unset
    ``ts`` (or ``setpoint_ends_at``) reads as 0 s, outside the sane range.
    """
    seq = r.seq
    ts_msg = r.ts
    seconds, nanos = ts_msg.seconds, ts_msg.nanos
    power = r.power_kw
    if not (
        0 < seq <= _SEQ_MAX
        and _TS_MIN <= seconds < _TS_MAX
        and 0 <= nanos < 1_000_000_000
        and -MAX_ABS_KW <= power <= MAX_ABS_KW  # false for NaN too
    ):
        return _reject_reason(r)
    ts = _cached_timestamp(seconds, nanos // 1000)
    has = r.HasField
    soc = r.soc_pct if has("soc_pct") else None
    if soc is not None and not (-1.0 <= soc <= 101.0):
        soc = None
    sp = r.setpoint_kw if has("setpoint_kw") else None
    if sp is not None and not -MAX_ABS_KW <= sp <= MAX_ABS_KW:
        sp = None
    lo = r.available_min_kw if has("available_min_kw") else None
    hi = r.available_max_kw if has("available_max_kw") else None
    # One chained test for the usual case (both sent and sane); the rest off the hot path.
    if (lo is not None or hi is not None) and (
        lo is None or hi is None or not -MAX_ABS_KW <= lo <= hi <= MAX_ABS_KW
    ):
        lo, hi = _available(lo, hi)
    stable = r.min_stable_kw if has("min_stable_kw") else None
    if stable is not None and not 0.0 <= stable <= MAX_ABS_KW:
        stable = None
    ends = None
    if has("setpoint_ends_at"):
        ends_msg = r.setpoint_ends_at
        e_seconds, e_nanos = ends_msg.seconds, ends_msg.nanos
        if _TS_MIN <= e_seconds < _TS_MAX and 0 <= e_nanos < 1_000_000_000:
            ends = _cached_timestamp(e_seconds, e_nanos // 1000)
    sp_id = r.setpoint_id
    status = r.status
    return (
        asset_id,
        seq,
        ts,
        received_at,
        power,
        soc,
        status if 0 <= status <= _INT2_MAX else 0,
        sp,
        # isprintable: no NUL (text refuses it) and no control or format characters.
        sp_id if sp_id and len(sp_id) <= MAX_ID_CHARS and sp_id.isprintable() else None,
        lo,
        hi,
        stable,
        ends,
    )


def _available(lo: float | None, hi: float | None) -> tuple[float | None, float | None]:
    """The live envelope's bounds as stored: each one not sane is dropped, and both when
    min > max (which side is wrong cannot be told)."""
    if lo is not None and not _sane_kw(lo):
        lo = None
    if hi is not None and not _sane_kw(hi):
        hi = None
    if lo is not None and hi is not None and lo > hi:
        return None, None
    return lo, hi


def _reject_reason(r: pb.Telemetry) -> RejectReason:
    """The first field of a refused reading that is out of range (off the hot path)."""
    if not 0 < r.seq <= _SEQ_MAX:
        return "seq_out_of_range"
    if not r.HasField("ts"):
        return "ts_missing"
    if not (_TS_MIN <= r.ts.seconds < _TS_MAX and 0 <= r.ts.nanos < 1_000_000_000):
        return "ts_out_of_range"
    if not _isfinite(r.power_kw):
        return "power_not_finite"
    return "power_out_of_range"


def register_result(reply: RegisterReply) -> pb.HeadendMessage:
    """`RegisterReply` → HeadendMessage(register_result)."""
    msg = pb.HeadendMessage()
    rr = msg.register_result
    rr.accepted_asset_ids.extend(reply.accepted)
    for r in reply.rejected:
        rr.rejected.add(asset_id=r.asset_id, code=_REJECT_CODES[r.code], reason=r.reason)
    rr.session_id = str(reply.session_id)
    rr.epoch = reply.epoch
    rr.telemetry_watermarks.update(reply.watermarks)
    rr.protocol_version = reply.protocol_version
    rr.default_asset_id = reply.default_asset_id
    rr.heartbeat_interval_s = reply.heartbeat_interval_s
    return msg


def setpoint_message(cmd: SetpointCommand) -> pb.HeadendMessage:
    """`SetpointCommand` → HeadendMessage(setpoint); a legacy target sets no target field.
    The time in force goes out as the operator gave it: ``duration_s`` or ``ends_at``."""
    msg = pb.HeadendMessage()
    sp = msg.setpoint
    sp.setpoint_id = str(cmd.setpoint_id)
    sp.power_kw = cmd.power_kw
    sp.issued_at.FromDatetime(cmd.issued_at)
    sp.expires_at.FromDatetime(cmd.expires_at)
    if cmd.duration_s is not None:
        sp.duration_s = cmd.duration_s
    if cmd.ends_at is not None:
        sp.ends_at.FromDatetime(cmd.ends_at)
    if cmd.target_kind == "asset":
        sp.asset_id = cmd.target_id
    elif cmd.target_kind == "site":
        sp.site_id = cmd.target_id
    elif cmd.target_kind == "group":
        sp.group_id = cmd.target_id
    return msg


def release_message(cmd: ReleaseCommand) -> pb.HeadendMessage:
    """`ReleaseCommand` → HeadendMessage(release)."""
    msg = pb.HeadendMessage()
    rel = msg.release
    rel.setpoint_id = str(cmd.setpoint_id)
    rel.reason = cmd.reason
    rel.issued_at.FromDatetime(cmd.issued_at)
    return msg


def heartbeat_message(seq: int, now: datetime) -> pb.HeadendMessage:
    """HeadendMessage(heartbeat)."""
    msg = pb.HeadendMessage()
    msg.heartbeat.seq = seq
    msg.heartbeat.ts.FromDatetime(now)
    return msg


def session_closed(reason: CloseReasonName, detail: str) -> pb.HeadendMessage:
    """HeadendMessage(session_closed)."""
    msg = pb.HeadendMessage()
    msg.session_closed.reason = _CLOSE_REASONS[reason]
    msg.session_closed.detail = detail
    return msg


__all__ = [
    "REJECT_REASONS",
    "AgentFrame",
    "RejectReason",
    "Row",
    "ack_from_pb",
    "body_kind",
    "heartbeat_message",
    "reading_row",
    "register_from_pb",
    "register_result",
    "release_message",
    "session_closed",
    "setpoint_message",
    "timestamp",
]
