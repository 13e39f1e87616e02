"""Dispatches: the states they move through, what a gateway acks, what is sent to it,
and a dispatch as the REST API shows it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

TargetKind = Literal["asset", "site", "group"]
DispatchState = Literal[
    "pending",
    "sent",
    "received",
    "applied",
    "partially_applied",
    "failed",
    "rejected",
    "expired",
    "superseded",
    "cancelling",
    "completed",
    "cancelled",
    "released",
]
AckStateName = Literal["received", "applied", "failed", "rejected", "expired", "released"]
#: Why the control of a setpoint ended (the wire's ReleaseCause, lower case).
ReleaseCauseName = Literal["duration_ended", "cancelled", "failsafe"]
#: Why an asset took less than asked (the wire's LimitReason, lower case; None = no limit hit).
LimitReasonName = Literal[
    "available_power",
    "state_of_charge",
    "min_stable_load",
    "device_fault",
    "device_timeout",
    "limits",
    "device_reduced",
]

#: Still on its way: waiting for delivery (pending) or for the gateway's final ack.
IN_FLIGHT_STATES: frozenset[str] = frozenset({"pending", "sent", "received"})
#: The devices took the setpoint: all of it (applied) or less than asked (partially_applied).
#: Settled, not ended: it stays in force until its end, a cancel or the fail-safe.
SETTLED_STATES: frozenset[str] = frozenset({"applied", "partially_applied"})
#: How the control of an applied setpoint ended: its duration (completed), the operator
#: (cancelled, also a pending one never delivered), the gateway's fail-safe (released).
CONTROL_ENDED_STATES: frozenset[str] = frozenset({"completed", "cancelled", "released"})
#: Ended: nothing moves a delivery or a dispatch out of these any more.
TERMINAL_STATES: frozenset[str] = frozenset(
    {"failed", "rejected", "expired", "superseded", "skipped"} | CONTROL_ENDED_STATES
)
#: States counted in ``vpp_dispatches_final_total`` when a dispatch reaches them: once
#: when its delivery settles or fails, once more when its control ends.
OUTCOME_STATES: frozenset[str] = SETTLED_STATES | TERMINAL_STATES
#: Progress order of dispatch states; a transition only ever moves forward.
STATE_RANK: dict[str, int] = {
    "pending": 0,
    "sent": 1,
    "received": 2,
    "applied": 3,
    "partially_applied": 3,
    "failed": 3,
    "rejected": 3,
    "expired": 3,
    "superseded": 3,
    # A delivery only: a group member offline at creation takes no share
    # (docs/decisions.md, "Dispatch delivery").
    "skipped": 3,
    # A cancel was asked; the release is on its way to the gateway.
    "cancelling": 4,
    "completed": 5,
    "cancelled": 5,
    "released": 5,
}


@dataclass(frozen=True, slots=True)
class Allocation:
    """One asset's share of a site or group setpoint, as the gateway reports it."""

    asset_id: str
    power_kw: float  # allocated to it
    applied_kw: float | None = None  # what the device set; None when it did not confirm
    limit_reason: LimitReasonName | None = None  # why applied_kw falls short of power_kw
    limit_detail: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """A gateway's SetpointAck."""

    setpoint_id: UUID
    asset_id: str
    state: AckStateName
    reason: str = ""
    ts: datetime | None = None
    applied_kw: float | None = None
    allocations: tuple[Allocation, ...] = ()
    clamped: bool = False
    requested_kw: float | None = None  # what the gateway was asked (its share), if it says
    shortfall_kw: float | None = None  # requested minus applied, as the gateway counts it
    limit_reason: LimitReasonName | None = None  # of an asset or legacy setpoint
    limit_detail: str = ""
    release_cause: ReleaseCauseName | None = None  # for RELEASED (None: not given)
    ends_at: datetime | None = None  # for APPLIED: its end of control, gateway clock


@dataclass(frozen=True, slots=True)
class SetpointCommand:
    """A setpoint to send to one site session (the id is the dispatch id).

    ``duration_s`` / ``ends_at``: its time in force, exactly as the operator gave it
    (at most one is set; neither: in force until superseded, released or cancelled).
    """

    setpoint_id: UUID
    target_kind: TargetKind | Literal["default"]
    target_id: str
    power_kw: float
    issued_at: datetime
    expires_at: datetime
    duration_s: float | None = None
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReleaseCommand:
    """End the control of a setpoint sent earlier (its dispatch was cancelled)."""

    setpoint_id: UUID
    reason: str
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    """A validated POST /dispatch."""

    target_kind: TargetKind
    target_id: str
    power_kw: float
    expires_at: datetime
    idempotency_key: str | None = None
    duration_s: float | None = None  # time in force once applied, or
    ends_at: datetime | None = None  # its absolute end (not both)

    @property
    def fingerprint(self) -> str:
        """What an idempotent retry must repeat (the expiry may drift with ttl_s); the
        time in force only when given, so keys stored before it existed still match."""
        text = f"{self.target_kind}:{self.target_id}:{self.power_kw!r}"
        if self.duration_s is not None:
            text += f":duration_s={self.duration_s!r}"
        if self.ends_at is not None:
            text += f":ends_at={self.ends_at.isoformat()}"
        return text


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """One site's part of a new dispatch."""

    site_id: str
    power_kw: float
    online: bool
    #: A group member that was offline while others were online: its share went to them.
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class DispatchEvent:
    """One recorded transition."""

    at: datetime
    state: str
    scope: str
    scope_id: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One site's delivery of a dispatch."""

    site_id: str
    power_kw: float
    state: str
    sent_at: datetime | None
    updated_at: datetime
    reason: str | None
    allocated_kw: float | None = None  # what the site's devices took (sum over its assets)
    shortfall_kw: float | None = None  # power_kw minus allocated_kw; 0 when met
    applied_at: datetime | None = None
    in_force_until: datetime | None = None  # end of control by the gateway's clock
    release_requested_at: datetime | None = None  # a cancel asked this site to release
    release_sent_at: datetime | None = None  # the last Release put on its stream
    released_at: datetime | None = None  # when the gateway released (its ack's time)
    release_cause: str | None = None  # duration_ended | cancelled | failsafe


@dataclass(frozen=True, slots=True)
class TargetView:
    """One asset's allocation and ack state."""

    asset_id: str
    site_id: str
    allocation_kw: float | None
    state: str
    applied_kw: float | None
    clamped: bool
    reason: str | None
    updated_at: datetime
    limit_reason: str | None = None
    limit_detail: str | None = None
    delivered_kw: float | None = None  # mean measured power after it was applied


@dataclass(frozen=True, slots=True)
class DispatchView:
    """A dispatch as the REST API shows it."""

    dispatch_id: UUID
    target_kind: str
    target_id: str
    power_kw: float
    state: str
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime
    detail: str | None = None
    deliveries: tuple[DeliveryView, ...] = ()
    targets: tuple[TargetView, ...] = ()
    events: tuple[DispatchEvent, ...] = ()
    allocated_kw: float | None = None  # what the devices took, once final
    shortfall_kw: float | None = None  # power_kw minus allocated_kw; 0 when met
    delivered_kw: float | None = None  # measured from telemetry after it was applied
    applied_at: datetime | None = None
    measured_at: datetime | None = None
    duration_s: float | None = None  # time in force as asked, or
    ends_at: datetime | None = None  # its absolute end as asked
    cancel_requested_at: datetime | None = None
    cancel_reason: str | None = None

    @property
    def requested_kw(self) -> float:
        """What the operator asked for (the dispatch's power_kw)."""
        return self.power_kw
