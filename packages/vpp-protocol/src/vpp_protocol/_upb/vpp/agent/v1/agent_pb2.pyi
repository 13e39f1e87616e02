import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AssetKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSET_KIND_UNSPECIFIED: _ClassVar[AssetKind]
    ASSET_KIND_PV: _ClassVar[AssetKind]
    ASSET_KIND_BESS: _ClassVar[AssetKind]
    ASSET_KIND_METER: _ClassVar[AssetKind]
    ASSET_KIND_GENSET: _ClassVar[AssetKind]
    ASSET_KIND_EV_CHARGER: _ClassVar[AssetKind]
    ASSET_KIND_LOAD: _ClassVar[AssetKind]
    ASSET_KIND_OTHER: _ClassVar[AssetKind]

class RejectCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_CODE_UNSPECIFIED: _ClassVar[RejectCode]
    REJECT_CODE_UNKNOWN_ASSET: _ClassVar[RejectCode]
    REJECT_CODE_FOREIGN_ASSET: _ClassVar[RejectCode]
    REJECT_CODE_DUPLICATE: _ClassVar[RejectCode]
    REJECT_CODE_INVALID: _ClassVar[RejectCode]
    REJECT_CODE_UNAUTHORIZED: _ClassVar[RejectCode]

class AssetStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSET_STATUS_UNSPECIFIED: _ClassVar[AssetStatus]
    ASSET_STATUS_OK: _ClassVar[AssetStatus]
    ASSET_STATUS_OFFLINE: _ClassVar[AssetStatus]
    ASSET_STATUS_FAULT: _ClassVar[AssetStatus]
    ASSET_STATUS_STANDBY: _ClassVar[AssetStatus]

class AckState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STATE_UNSPECIFIED: _ClassVar[AckState]
    ACK_STATE_RECEIVED: _ClassVar[AckState]
    ACK_STATE_APPLIED: _ClassVar[AckState]
    ACK_STATE_FAILED: _ClassVar[AckState]
    ACK_STATE_REJECTED: _ClassVar[AckState]
    ACK_STATE_EXPIRED: _ClassVar[AckState]
    ACK_STATE_RELEASED: _ClassVar[AckState]

class ReleaseCause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELEASE_CAUSE_UNSPECIFIED: _ClassVar[ReleaseCause]
    RELEASE_CAUSE_DURATION_ENDED: _ClassVar[ReleaseCause]
    RELEASE_CAUSE_CANCELLED: _ClassVar[ReleaseCause]
    RELEASE_CAUSE_FAILSAFE: _ClassVar[ReleaseCause]

class LimitReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_REASON_UNSPECIFIED: _ClassVar[LimitReason]
    LIMIT_REASON_AVAILABLE_POWER: _ClassVar[LimitReason]
    LIMIT_REASON_STATE_OF_CHARGE: _ClassVar[LimitReason]
    LIMIT_REASON_MIN_STABLE_LOAD: _ClassVar[LimitReason]
    LIMIT_REASON_DEVICE_FAULT: _ClassVar[LimitReason]
    LIMIT_REASON_DEVICE_TIMEOUT: _ClassVar[LimitReason]
    LIMIT_REASON_LIMITS: _ClassVar[LimitReason]
    LIMIT_REASON_DEVICE_REDUCED: _ClassVar[LimitReason]

class CloseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLOSE_REASON_UNSPECIFIED: _ClassVar[CloseReason]
    CLOSE_REASON_SUPERSEDED: _ClassVar[CloseReason]
    CLOSE_REASON_SERVER_SHUTDOWN: _ClassVar[CloseReason]
    CLOSE_REASON_HEARTBEAT_TIMEOUT: _ClassVar[CloseReason]
    CLOSE_REASON_UNAUTHORIZED: _ClassVar[CloseReason]
    CLOSE_REASON_PROTOCOL_ERROR: _ClassVar[CloseReason]
ASSET_KIND_UNSPECIFIED: AssetKind
ASSET_KIND_PV: AssetKind
ASSET_KIND_BESS: AssetKind
ASSET_KIND_METER: AssetKind
ASSET_KIND_GENSET: AssetKind
ASSET_KIND_EV_CHARGER: AssetKind
ASSET_KIND_LOAD: AssetKind
ASSET_KIND_OTHER: AssetKind
REJECT_CODE_UNSPECIFIED: RejectCode
REJECT_CODE_UNKNOWN_ASSET: RejectCode
REJECT_CODE_FOREIGN_ASSET: RejectCode
REJECT_CODE_DUPLICATE: RejectCode
REJECT_CODE_INVALID: RejectCode
REJECT_CODE_UNAUTHORIZED: RejectCode
ASSET_STATUS_UNSPECIFIED: AssetStatus
ASSET_STATUS_OK: AssetStatus
ASSET_STATUS_OFFLINE: AssetStatus
ASSET_STATUS_FAULT: AssetStatus
ASSET_STATUS_STANDBY: AssetStatus
ACK_STATE_UNSPECIFIED: AckState
ACK_STATE_RECEIVED: AckState
ACK_STATE_APPLIED: AckState
ACK_STATE_FAILED: AckState
ACK_STATE_REJECTED: AckState
ACK_STATE_EXPIRED: AckState
ACK_STATE_RELEASED: AckState
RELEASE_CAUSE_UNSPECIFIED: ReleaseCause
RELEASE_CAUSE_DURATION_ENDED: ReleaseCause
RELEASE_CAUSE_CANCELLED: ReleaseCause
RELEASE_CAUSE_FAILSAFE: ReleaseCause
LIMIT_REASON_UNSPECIFIED: LimitReason
LIMIT_REASON_AVAILABLE_POWER: LimitReason
LIMIT_REASON_STATE_OF_CHARGE: LimitReason
LIMIT_REASON_MIN_STABLE_LOAD: LimitReason
LIMIT_REASON_DEVICE_FAULT: LimitReason
LIMIT_REASON_DEVICE_TIMEOUT: LimitReason
LIMIT_REASON_LIMITS: LimitReason
LIMIT_REASON_DEVICE_REDUCED: LimitReason
CLOSE_REASON_UNSPECIFIED: CloseReason
CLOSE_REASON_SUPERSEDED: CloseReason
CLOSE_REASON_SERVER_SHUTDOWN: CloseReason
CLOSE_REASON_HEARTBEAT_TIMEOUT: CloseReason
CLOSE_REASON_UNAUTHORIZED: CloseReason
CLOSE_REASON_PROTOCOL_ERROR: CloseReason

class AssetDescriptor(_message.Message):
    __slots__ = ("asset_id", "kind", "capacity_kw", "min_kw", "max_kw", "energy_kwh", "credential", "min_stable_kw", "fallback_kw")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_KW_FIELD_NUMBER: _ClassVar[int]
    MIN_KW_FIELD_NUMBER: _ClassVar[int]
    MAX_KW_FIELD_NUMBER: _ClassVar[int]
    ENERGY_KWH_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    MIN_STABLE_KW_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_KW_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    kind: AssetKind
    capacity_kw: float
    min_kw: float
    max_kw: float
    energy_kwh: float
    credential: str
    min_stable_kw: float
    fallback_kw: float
    def __init__(self, asset_id: _Optional[str] = ..., kind: _Optional[_Union[AssetKind, str]] = ..., capacity_kw: _Optional[float] = ..., min_kw: _Optional[float] = ..., max_kw: _Optional[float] = ..., energy_kwh: _Optional[float] = ..., credential: _Optional[str] = ..., min_stable_kw: _Optional[float] = ..., fallback_kw: _Optional[float] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("site_id", "assets", "agent_version", "protocol_version", "asset_id")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    assets: _containers.RepeatedCompositeFieldContainer[AssetDescriptor]
    agent_version: str
    protocol_version: int
    asset_id: str
    def __init__(self, site_id: _Optional[str] = ..., assets: _Optional[_Iterable[_Union[AssetDescriptor, _Mapping]]] = ..., agent_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., asset_id: _Optional[str] = ...) -> None: ...

class RejectedAsset(_message.Message):
    __slots__ = ("asset_id", "code", "reason")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    code: RejectCode
    reason: str
    def __init__(self, asset_id: _Optional[str] = ..., code: _Optional[_Union[RejectCode, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RegisterResult(_message.Message):
    __slots__ = ("accepted_asset_ids", "rejected", "session_id", "epoch", "telemetry_watermarks", "protocol_version", "default_asset_id", "heartbeat_interval_s")
    class TelemetryWatermarksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ACCEPTED_ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_WATERMARKS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    accepted_asset_ids: _containers.RepeatedScalarFieldContainer[str]
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedAsset]
    session_id: str
    epoch: int
    telemetry_watermarks: _containers.ScalarMap[str, int]
    protocol_version: int
    default_asset_id: str
    heartbeat_interval_s: float
    def __init__(self, accepted_asset_ids: _Optional[_Iterable[str]] = ..., rejected: _Optional[_Iterable[_Union[RejectedAsset, _Mapping]]] = ..., session_id: _Optional[str] = ..., epoch: _Optional[int] = ..., telemetry_watermarks: _Optional[_Mapping[str, int]] = ..., protocol_version: _Optional[int] = ..., default_asset_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class Telemetry(_message.Message):
    __slots__ = ("asset_id", "seq", "ts", "power_kw", "soc_pct", "status", "setpoint_kw", "setpoint_id", "available_min_kw", "available_max_kw", "min_stable_kw", "setpoint_ends_at")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_FIELD_NUMBER: _ClassVar[int]
    SOC_PCT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SETPOINT_KW_FIELD_NUMBER: _ClassVar[int]
    SETPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MIN_KW_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_MAX_KW_FIELD_NUMBER: _ClassVar[int]
    MIN_STABLE_KW_FIELD_NUMBER: _ClassVar[int]
    SETPOINT_ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    seq: int
    ts: _timestamp_pb2.Timestamp
    power_kw: float
    soc_pct: float
    status: AssetStatus
    setpoint_kw: float
    setpoint_id: str
    available_min_kw: float
    available_max_kw: float
    min_stable_kw: float
    setpoint_ends_at: _timestamp_pb2.Timestamp
    def __init__(self, asset_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., power_kw: _Optional[float] = ..., soc_pct: _Optional[float] = ..., status: _Optional[_Union[AssetStatus, str]] = ..., setpoint_kw: _Optional[float] = ..., setpoint_id: _Optional[str] = ..., available_min_kw: _Optional[float] = ..., available_max_kw: _Optional[float] = ..., min_stable_kw: _Optional[float] = ..., setpoint_ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TelemetryBatch(_message.Message):
    __slots__ = ("readings",)
    READINGS_FIELD_NUMBER: _ClassVar[int]
    readings: _containers.RepeatedCompositeFieldContainer[Telemetry]
    def __init__(self, readings: _Optional[_Iterable[_Union[Telemetry, _Mapping]]] = ...) -> None: ...

class Setpoint(_message.Message):
    __slots__ = ("setpoint_id", "asset_id", "site_id", "group_id", "power_kw", "issued_at", "expires_at", "ends_at", "duration_s")
    SETPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    setpoint_id: str
    asset_id: str
    site_id: str
    group_id: str
    power_kw: float
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    duration_s: float
    def __init__(self, setpoint_id: _Optional[str] = ..., asset_id: _Optional[str] = ..., site_id: _Optional[str] = ..., group_id: _Optional[str] = ..., power_kw: _Optional[float] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_s: _Optional[float] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("setpoint_id", "reason", "issued_at")
    SETPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    setpoint_id: str
    reason: str
    issued_at: _timestamp_pb2.Timestamp
    def __init__(self, setpoint_id: _Optional[str] = ..., reason: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("asset_id", "power_kw", "applied_kw", "limit_reason", "limit_detail")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_FIELD_NUMBER: _ClassVar[int]
    APPLIED_KW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_REASON_FIELD_NUMBER: _ClassVar[int]
    LIMIT_DETAIL_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    power_kw: float
    applied_kw: float
    limit_reason: LimitReason
    limit_detail: str
    def __init__(self, asset_id: _Optional[str] = ..., power_kw: _Optional[float] = ..., applied_kw: _Optional[float] = ..., limit_reason: _Optional[_Union[LimitReason, str]] = ..., limit_detail: _Optional[str] = ...) -> None: ...

class SetpointAck(_message.Message):
    __slots__ = ("setpoint_id", "asset_id", "state", "reason", "ts", "applied_kw", "allocations", "clamped", "requested_kw", "shortfall_kw", "limit_reason", "limit_detail", "release_cause", "ends_at")
    SETPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_KW_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    CLAMPED_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_KW_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_KW_FIELD_NUMBER: _ClassVar[int]
    LIMIT_REASON_FIELD_NUMBER: _ClassVar[int]
    LIMIT_DETAIL_FIELD_NUMBER: _ClassVar[int]
    RELEASE_CAUSE_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    setpoint_id: str
    asset_id: str
    state: AckState
    reason: str
    ts: _timestamp_pb2.Timestamp
    applied_kw: float
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    clamped: bool
    requested_kw: float
    shortfall_kw: float
    limit_reason: LimitReason
    limit_detail: str
    release_cause: ReleaseCause
    ends_at: _timestamp_pb2.Timestamp
    def __init__(self, setpoint_id: _Optional[str] = ..., asset_id: _Optional[str] = ..., state: _Optional[_Union[AckState, str]] = ..., reason: _Optional[str] = ..., ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., applied_kw: _Optional[float] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ..., clamped: _Optional[bool] = ..., requested_kw: _Optional[float] = ..., shortfall_kw: _Optional[float] = ..., limit_reason: _Optional[_Union[LimitReason, str]] = ..., limit_detail: _Optional[str] = ..., release_cause: _Optional[_Union[ReleaseCause, str]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("ts", "seq")
    TS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ts: _timestamp_pb2.Timestamp
    seq: int
    def __init__(self, ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seq: _Optional[int] = ...) -> None: ...

class SessionClosed(_message.Message):
    __slots__ = ("reason", "detail")
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reason: CloseReason
    detail: str
    def __init__(self, reason: _Optional[_Union[CloseReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("register", "telemetry", "telemetry_batch", "setpoint_ack", "heartbeat")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_BATCH_FIELD_NUMBER: _ClassVar[int]
    SETPOINT_ACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    register: Register
    telemetry: Telemetry
    telemetry_batch: TelemetryBatch
    setpoint_ack: SetpointAck
    heartbeat: Heartbeat
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., telemetry: _Optional[_Union[Telemetry, _Mapping]] = ..., telemetry_batch: _Optional[_Union[TelemetryBatch, _Mapping]] = ..., setpoint_ack: _Optional[_Union[SetpointAck, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class HeadendMessage(_message.Message):
    __slots__ = ("register_result", "setpoint", "heartbeat", "session_closed", "release")
    REGISTER_RESULT_FIELD_NUMBER: _ClassVar[int]
    SETPOINT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    SESSION_CLOSED_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    register_result: RegisterResult
    setpoint: Setpoint
    heartbeat: Heartbeat
    session_closed: SessionClosed
    release: Release
    def __init__(self, register_result: _Optional[_Union[RegisterResult, _Mapping]] = ..., setpoint: _Optional[_Union[Setpoint, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., session_closed: _Optional[_Union[SessionClosed, _Mapping]] = ..., release: _Optional[_Union[Release, _Mapping]] = ...) -> None: ...
