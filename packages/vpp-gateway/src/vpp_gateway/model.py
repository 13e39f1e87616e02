"""Domain types the gateway works with; protobuf types never get past `convert`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal


class Status(enum.StrEnum):
    """Operating status of an asset (mirrors the wire enum)."""

    OK = "ok"
    OFFLINE = "offline"
    FAULT = "fault"
    STANDBY = "standby"


class AckState(enum.StrEnum):
    """Progress of a setpoint on the gateway (mirrors the wire enum)."""

    RECEIVED = "received"
    APPLIED = "applied"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    #: Its control ended; the assets it still controlled went back to their fallback.
    RELEASED = "released"


class ReleaseCause(enum.StrEnum):
    """Why the control of a setpoint ended (an ack RELEASED; mirrors the wire enum)."""

    DURATION_ENDED = "duration_ended"
    CANCELLED = "cancelled"
    FAILSAFE = "failsafe"


class LimitReason(enum.StrEnum):
    """Why an asset (or a single-asset setpoint) took less than asked (mirrors the wire enum)."""

    AVAILABLE_POWER = "available_power"
    STATE_OF_CHARGE = "state_of_charge"
    MIN_STABLE_LOAD = "min_stable_load"
    DEVICE_FAULT = "device_fault"
    DEVICE_TIMEOUT = "device_timeout"
    LIMITS = "limits"
    DEVICE_REDUCED = "device_reduced"


@dataclass(frozen=True, slots=True)
class Limited:
    """A limit an asset hit, with a detail for people (``"soc 4 %: can discharge 0 kW"``)."""

    reason: LimitReason
    detail: str


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry reading of one asset, as it goes on the wire and into the spool."""

    asset_id: str
    seq: int
    ts: datetime
    power_kw: float
    status: Status
    soc_pct: float | None = None
    setpoint_kw: float | None = None
    setpoint_id: str = ""
    # The live envelope (DESIGN.md §3a); None = not known (meters, unbounded limits).
    available_min_kw: float | None = None
    available_max_kw: float | None = None
    min_stable_kw: float | None = None
    # End of control of the setpoint in force; None = none in force, or no end.
    setpoint_ends_at: datetime | None = None


TargetKind = Literal["asset", "site", "group", "default"]


@dataclass(frozen=True, slots=True)
class SetpointCommand:
    """A setpoint from the headend. ``target_kind == "default"``: legacy, the one asset."""

    setpoint_id: str
    target_kind: TargetKind
    target_id: str
    power_kw: float
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    #: Time in force once applied (DESIGN.md §3b): an absolute end and/or a duration from
    #: the moment the gateway applies it; the earlier end applies. None = no end.
    ends_at: datetime | None = None
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class ReleaseCommand:
    """The headend ends the control of a setpoint it sent (e.g. its dispatch was cancelled)."""

    setpoint_id: str
    reason: str = ""
    issued_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    """One asset's share of a site or group setpoint.

    ``power_kw``: what the gateway last commanded the asset for this setpoint (its split
    share plus what it took over from others); ``applied_kw``: what the device set (None
    when it never confirmed); ``limit``: why it did not take more, if it hit a limit.
    """

    asset_id: str
    power_kw: float
    applied_kw: float | None = None
    limit: Limited | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """The gateway's report on a setpoint."""

    setpoint_id: str
    state: AckState
    ts: datetime
    asset_id: str = ""
    reason: str = ""
    applied_kw: float | None = None
    allocations: tuple[Allocation, ...] = ()
    clamped: bool = False
    # For APPLIED and FAILED: the setpoint's power_kw and requested - total applied.
    requested_kw: float | None = None
    shortfall_kw: float | None = None
    #: Why a single-asset setpoint fell short (site/group: per allocation).
    limit: Limited | None = None
    #: For RELEASED: why its control ended.
    release_cause: ReleaseCause | None = None
    #: For APPLIED: when its control ends on the gateway's clock; None = no end.
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class InForce:
    """A setpoint whose control has not ended: its ack's asset id and its end (None: none).

    It may control no asset any more (superseded on every one) and still wait for its end,
    which is then acknowledged RELEASED with no allocations.
    """

    setpoint_id: str
    asset_id: str = ""
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Control:
    """Which setpoint controls one asset now, and the power the gateway commanded for it.

    ``releasing``: the setpoint's control ended (that cause) but the device has not yet
    confirmed its release; the gateway retries it every tick until it does, or until a
    newer setpoint takes the asset over.
    """

    asset_id: str
    setpoint_id: str
    power_kw: float
    releasing: ReleaseCause | None = None


@dataclass(frozen=True, slots=True)
class RejectedAsset:
    """An asset the headend refused in its RegisterResult."""

    asset_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """The headend's answer to Register."""

    session_id: str
    epoch: int
    accepted: frozenset[str]
    rejected: tuple[RejectedAsset, ...] = ()
    watermarks: dict[str, int] = field(default_factory=dict)
    heartbeat_interval_s: float = 0.0
    default_asset_id: str = ""
    protocol_version: int = 0


@dataclass(frozen=True, slots=True)
class CloseNotice:
    """The headend's last word on a stream: ``reason`` is a short code (``superseded``...)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HeartbeatIn:
    """A heartbeat from the headend."""

    seq: int
    ts: datetime | None


HeadendEvent = RegisterOutcome | SetpointCommand | ReleaseCommand | CloseNotice | HeartbeatIn
