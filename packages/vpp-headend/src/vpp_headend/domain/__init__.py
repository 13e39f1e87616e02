"""The headend's own types: frozen dataclasses that services work with.

Wire messages are converted to and from these in `vpp_headend.convert` only. This
package is the bottom layer: it imports nothing of the headend but `limits`.
"""

from __future__ import annotations

from .dispatch import (
    CONTROL_ENDED_STATES,
    IN_FLIGHT_STATES,
    OUTCOME_STATES,
    SETTLED_STATES,
    STATE_RANK,
    TERMINAL_STATES,
    Ack,
    AckStateName,
    Allocation,
    DeliveryPlan,
    DeliveryView,
    DispatchEvent,
    DispatchRequest,
    DispatchState,
    DispatchView,
    LimitReasonName,
    ReleaseCauseName,
    ReleaseCommand,
    SetpointCommand,
    TargetKind,
    TargetView,
)
from .registry import (
    ASSET_KINDS,
    Asset,
    AssetClaim,
    ClaimOutcome,
    CloseReasonName,
    GatewayView,
    RegisterReply,
    RegisterRequest,
    RejectCodeName,
    Rejection,
    Site,
)
from .telemetry import STATUS_NAMES, Envelope, LatestReading, status_name

__all__ = [
    "ASSET_KINDS",
    "CONTROL_ENDED_STATES",
    "IN_FLIGHT_STATES",
    "OUTCOME_STATES",
    "SETTLED_STATES",
    "STATE_RANK",
    "STATUS_NAMES",
    "TERMINAL_STATES",
    "Ack",
    "AckStateName",
    "Allocation",
    "Asset",
    "AssetClaim",
    "ClaimOutcome",
    "CloseReasonName",
    "DeliveryPlan",
    "DeliveryView",
    "DispatchEvent",
    "DispatchRequest",
    "DispatchState",
    "DispatchView",
    "Envelope",
    "GatewayView",
    "LatestReading",
    "LimitReasonName",
    "RegisterReply",
    "RegisterRequest",
    "RejectCodeName",
    "Rejection",
    "ReleaseCauseName",
    "ReleaseCommand",
    "SetpointCommand",
    "Site",
    "TargetKind",
    "TargetView",
    "status_name",
]
