"""The one place where wire (protobuf) messages become domain types and back.

Messages are built with every field given: betterproto2's default lookup is slow
(docs/stack_notes.md), and this is the telemetry hot path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import betterproto2

import vpp_protocol as pb
from vpp_protocol.sitefile import AssetConfig

from ._version import __version__
from .model import (
    Ack,
    AckState,
    Allocation,
    CloseNotice,
    HeadendEvent,
    HeartbeatIn,
    Limited,
    LimitReason,
    Reading,
    RegisterOutcome,
    RejectedAsset,
    ReleaseCause,
    ReleaseCommand,
    SetpointCommand,
    Status,
)
from .settings import GatewaySettings

AGENT_VERSION = f"vpp-gateway {__version__}"

_KINDS = {
    "pv": pb.AssetKind.PV,
    "bess": pb.AssetKind.BESS,
    "meter": pb.AssetKind.METER,
    "genset": pb.AssetKind.GENSET,
    "ev_charger": pb.AssetKind.EV_CHARGER,
    "load": pb.AssetKind.LOAD,
    "other": pb.AssetKind.OTHER,
}
_STATUS = {
    Status.OK: pb.AssetStatus.OK,
    Status.OFFLINE: pb.AssetStatus.OFFLINE,
    Status.FAULT: pb.AssetStatus.FAULT,
    Status.STANDBY: pb.AssetStatus.STANDBY,
}
_ACK = {
    AckState.RECEIVED: pb.AckState.RECEIVED,
    AckState.APPLIED: pb.AckState.APPLIED,
    AckState.FAILED: pb.AckState.FAILED,
    AckState.REJECTED: pb.AckState.REJECTED,
    AckState.EXPIRED: pb.AckState.EXPIRED,
    AckState.RELEASED: pb.AckState.RELEASED,
}
_CAUSE = {
    None: pb.ReleaseCause.UNSPECIFIED,
    ReleaseCause.DURATION_ENDED: pb.ReleaseCause.DURATION_ENDED,
    ReleaseCause.CANCELLED: pb.ReleaseCause.CANCELLED,
    ReleaseCause.FAILSAFE: pb.ReleaseCause.FAILSAFE,
}
_LIMIT = {
    LimitReason.AVAILABLE_POWER: pb.LimitReason.AVAILABLE_POWER,
    LimitReason.STATE_OF_CHARGE: pb.LimitReason.STATE_OF_CHARGE,
    LimitReason.MIN_STABLE_LOAD: pb.LimitReason.MIN_STABLE_LOAD,
    LimitReason.DEVICE_FAULT: pb.LimitReason.DEVICE_FAULT,
    LimitReason.DEVICE_TIMEOUT: pb.LimitReason.DEVICE_TIMEOUT,
    LimitReason.LIMITS: pb.LimitReason.LIMITS,
    LimitReason.DEVICE_REDUCED: pb.LimitReason.DEVICE_REDUCED,
}
_CLOSE = {
    pb.CloseReason.SUPERSEDED: "superseded",
    pb.CloseReason.SERVER_SHUTDOWN: "server shutdown",
    pb.CloseReason.HEARTBEAT_TIMEOUT: "heartbeat timeout (headend side)",
    pb.CloseReason.UNAUTHORIZED: "unauthorized",
    pb.CloseReason.PROTOCOL_ERROR: "protocol error",
}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def descriptor(asset: AssetConfig) -> pb.AssetDescriptor:
    lo, hi = asset.bounds
    return pb.AssetDescriptor(
        asset_id=asset.asset_id,
        kind=_KINDS[asset.kind],
        capacity_kw=asset.capacity_kw,
        min_kw=_finite(lo),
        max_kw=_finite(hi),
        energy_kwh=asset.energy_kwh,
        credential=asset.credential or "",
        min_stable_kw=asset.min_stable_kw or None,
        fallback_kw=asset.fallback_kw,
    )


def register_message(settings: GatewaySettings) -> pb.AgentMessage:
    """Register: the asset list, or (legacy) only the one asset id."""
    if settings.legacy:
        reg = pb.Register(
            site_id=settings.site_id,
            assets=[],
            agent_version=AGENT_VERSION,
            protocol_version=pb.PROTOCOL_VERSION,
            asset_id=settings.assets[0].asset_id,
        )
    else:
        reg = pb.Register(
            site_id=settings.site_id,
            assets=[descriptor(a) for a in settings.assets],
            agent_version=AGENT_VERSION,
            protocol_version=pb.PROTOCOL_VERSION,
            asset_id="",
        )
    return pb.AgentMessage(register=reg)


def telemetry(reading: Reading, *, legacy: bool = False) -> pb.Telemetry:
    return pb.Telemetry(
        asset_id="" if legacy else reading.asset_id,
        seq=reading.seq,
        ts=reading.ts,
        power_kw=reading.power_kw,
        soc_pct=reading.soc_pct,
        status=_STATUS[reading.status],
        setpoint_kw=reading.setpoint_kw,
        setpoint_id=reading.setpoint_id,
        available_min_kw=reading.available_min_kw,
        available_max_kw=reading.available_max_kw,
        min_stable_kw=reading.min_stable_kw,
        setpoint_ends_at=reading.setpoint_ends_at,
    )


def telemetry_messages(readings: Sequence[Reading], *, legacy: bool) -> list[pb.AgentMessage]:
    """One TelemetryBatch, or (legacy) one Telemetry message per reading."""
    if legacy:
        return [pb.AgentMessage(telemetry=telemetry(r, legacy=True)) for r in readings]
    if not readings:
        return []
    batch = pb.TelemetryBatch(readings=[telemetry(r) for r in readings])
    return [pb.AgentMessage(telemetry_batch=batch)]


def _limit(limit: Limited | None) -> tuple[pb.LimitReason, str]:
    if limit is None:
        return pb.LimitReason.UNSPECIFIED, ""
    return _LIMIT[limit.reason], limit.detail


def _allocation(a: Allocation) -> pb.Allocation:
    reason, detail = _limit(a.limit)
    return pb.Allocation(
        asset_id=a.asset_id,
        power_kw=a.power_kw,
        applied_kw=a.applied_kw,
        limit_reason=reason,
        limit_detail=detail,
    )


def ack_message(ack: Ack) -> pb.AgentMessage:
    reason, detail = _limit(ack.limit)
    return pb.AgentMessage(
        setpoint_ack=pb.SetpointAck(
            setpoint_id=ack.setpoint_id,
            asset_id=ack.asset_id,
            state=_ACK[ack.state],
            reason=ack.reason,
            ts=ack.ts,
            applied_kw=ack.applied_kw,
            allocations=[_allocation(a) for a in ack.allocations],
            clamped=ack.clamped,
            requested_kw=ack.requested_kw,
            shortfall_kw=ack.shortfall_kw,
            limit_reason=reason,
            limit_detail=detail,
            release_cause=_CAUSE[ack.release_cause],
            ends_at=ack.ends_at,
        )
    )


def heartbeat_message(seq: int, ts: datetime) -> pb.AgentMessage:
    return pb.AgentMessage(heartbeat=pb.Heartbeat(ts=ts, seq=seq))


def _reject_reason(r: pb.RejectedAsset) -> str:
    """The headend's reason; an UNAUTHORIZED claim (e.g. a wrong asset credential) says so."""
    text = r.reason or r.code.name or "rejected"
    if r.code == pb.RejectCode.UNAUTHORIZED and not text.startswith("unauthorized"):
        return f"unauthorized: {text}"
    return text


def headend_event(msg: pb.HeadendMessage) -> HeadendEvent | None:
    """The domain event a headend message carries; None for an empty or unknown body."""
    field, body = betterproto2.which_one_of(msg, "body")
    if field == "register_result" and isinstance(body, pb.RegisterResult):
        return RegisterOutcome(
            session_id=body.session_id,
            epoch=body.epoch,
            accepted=frozenset(body.accepted_asset_ids),
            rejected=tuple(RejectedAsset(r.asset_id, _reject_reason(r)) for r in body.rejected),
            watermarks=dict(body.telemetry_watermarks),
            heartbeat_interval_s=body.heartbeat_interval_s
            if math.isfinite(body.heartbeat_interval_s) and body.heartbeat_interval_s > 0
            else 0.0,
            default_asset_id=body.default_asset_id,
            protocol_version=body.protocol_version,
        )
    if field == "setpoint" and isinstance(body, pb.Setpoint):
        target = pb.setpoint_target(body)
        return SetpointCommand(
            setpoint_id=body.setpoint_id,
            target_kind=target.kind,
            target_id=target.id,
            power_kw=body.power_kw,
            issued_at=body.issued_at,
            expires_at=body.expires_at,
            ends_at=body.ends_at,
            duration_s=body.duration_s,
        )
    if field == "release" and isinstance(body, pb.Release):
        return ReleaseCommand(
            setpoint_id=body.setpoint_id, reason=body.reason, issued_at=body.issued_at
        )
    if field == "heartbeat" and isinstance(body, pb.Heartbeat):
        return HeartbeatIn(seq=body.seq, ts=body.ts)
    if field == "session_closed" and isinstance(body, pb.SessionClosed):
        return CloseNotice(reason=_CLOSE.get(body.reason, "closed by headend"), detail=body.detail)
    return None
