"""VPP Edge Gateway wire protocol (``vpp.agent.v1``).

The message types are betterproto2 dataclasses generated from
``proto/vpp/agent/v1/agent.proto`` (never edited by hand; ``nox -s proto``
regenerates them). Build messages with exactly one member of a oneof set.

Also here: the protocol version, one decode function with one error type, and the
legacy single-asset rules (a message without ``asset_id`` means the session's asset).
"""

from ._codec import DecodeError, decode
from ._generated.vpp.agent.v1 import (
    AckState,
    AgentMessage,
    AgentServiceBase,
    AgentServiceStub,
    Allocation,
    AssetDescriptor,
    AssetKind,
    AssetStatus,
    CloseReason,
    HeadendMessage,
    Heartbeat,
    LimitReason,
    Register,
    RegisterResult,
    RejectCode,
    RejectedAsset,
    Release,
    ReleaseCause,
    SessionClosed,
    Setpoint,
    SetpointAck,
    Telemetry,
    TelemetryBatch,
)
from ._legacy import (
    SetpointTarget,
    TargetKind,
    is_legacy_register,
    setpoint_target,
    telemetry_asset_id,
)
from ._version import PROTOCOL_VERSION, __version__

#: Fully qualified name of the gRPC service, e.g. for reflection and health checks.
SERVICE_NAME = "vpp.agent.v1.AgentService"

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_NAME",
    "AckState",
    "AgentMessage",
    "AgentServiceBase",
    "AgentServiceStub",
    "Allocation",
    "AssetDescriptor",
    "AssetKind",
    "AssetStatus",
    "CloseReason",
    "DecodeError",
    "HeadendMessage",
    "Heartbeat",
    "LimitReason",
    "Register",
    "RegisterResult",
    "RejectCode",
    "RejectedAsset",
    "Release",
    "ReleaseCause",
    "SessionClosed",
    "Setpoint",
    "SetpointAck",
    "SetpointTarget",
    "TargetKind",
    "Telemetry",
    "TelemetryBatch",
    "__version__",
    "decode",
    "is_legacy_register",
    "setpoint_target",
    "telemetry_asset_id",
]
