"""Headend messages out: the Register reply, setpoints, releases, heartbeats and the
close of a session, each a `pb.HeadendMessage` (a heartbeat encodes in ~5 µs)."""

from __future__ import annotations

from datetime import datetime

from vpp_protocol.upb import pb

from ..domain import CloseReasonName, RegisterReply, ReleaseCommand, SetpointCommand

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
    "heartbeat_message",
    "register_result",
    "release_message",
    "session_closed",
    "setpoint_message",
]
