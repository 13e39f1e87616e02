"""The one edge between wire messages and the headend's domain types.

Both directions use the upb messages (`vpp_protocol.upb`): incoming telemetry goes
straight to COPY row tuples (`readings`), Register and SetpointAck become domain values
(`incoming`), and an outgoing heartbeat (`outgoing`) encodes in ~5 µs where the
betterproto2 dataclass took ~75 µs (10,000 gateways send ~670 heartbeats a second).
"""

from __future__ import annotations

from .incoming import AgentFrame, ack_from_pb, body_kind, register_from_pb
from .outgoing import (
    heartbeat_message,
    register_result,
    release_message,
    session_closed,
    setpoint_message,
)
from .readings import REJECT_REASONS, ROW_SEQ, RejectReason, Row, reading_row, timestamp

__all__ = [
    "REJECT_REASONS",
    "ROW_SEQ",
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
