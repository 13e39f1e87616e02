"""Typed rows of the dispatch tables: what the dispatch repositories read, and the changes
the pure state machine (`vpp_headend.dispatch.transitions`) decides and they write.
No SQL here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True, slots=True)
class DispatchRow:
    """The ``dispatches`` columns the lifecycle decides on."""

    dispatch_id: UUID
    target_kind: str
    target_id: str
    power_kw: float
    state: str
    issued_at: datetime
    expires_at: datetime
    request_fingerprint: str | None = None
    duration_s: float | None = None
    ends_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    cancel_reason: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One ``dispatch_deliveries`` row as the lifecycle reads it."""

    site_id: str
    power_kw: float
    state: str
    sent_at: datetime | None
    attempts: int
    allocated_kw: float | None = None
    release_sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TargetRow:
    """One whole ``dispatch_targets`` row, as written by an ack (`delivered_kw` is
    written by the measurement job alone, so it is not part of it)."""

    dispatch_id: UUID
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


@dataclass(frozen=True, slots=True)
class Locked:
    """A dispatch locked for this transaction, with its deliveries (by site id) and
    targets (by asset id) as read after the lock was granted."""

    dispatch: DispatchRow
    deliveries: dict[str, DeliveryRow]
    targets: dict[str, TargetRow]


@dataclass(frozen=True, slots=True)
class EventRow:
    """One ``dispatch_events`` row (a transition)."""

    dispatch_id: UUID
    at: datetime
    state: str
    scope: str  # dispatch | site | asset
    scope_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Taken:
    """What a site's devices took of its share: ``allocated_kw`` and the gap."""

    allocated_kw: float
    shortfall_kw: float


@dataclass(frozen=True, slots=True)
class Released:
    """How a gateway ended the control of a delivery: when, and why (None: not said)."""

    at: datetime
    cause: str | None


@dataclass(frozen=True, slots=True)
class DeliveryChange:
    """A delivery's move: its new state, and what comes with that state."""

    site_id: str
    state: str
    updated_at: datetime
    reason: str | None = None
    sent: tuple[datetime, int] | None = None  # (sent_at, attempts) when it goes out
    taken: Taken | None = None  # with applied / partially_applied / failed
    applied_at: datetime | None = None
    release_requested_at: datetime | None = None  # entering cancelling
    released: Released | None = None  # a RELEASED ack ended it
    in_force_until: datetime | None = None  # with applied: its end by the gateway's clock


@dataclass(frozen=True, slots=True)
class DispatchChange:
    """The dispatch's move (its state follows its deliveries')."""

    state: str
    updated_at: datetime
    taken: Taken | None = None  # once final with something taken
    applied_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OpenDelivery:
    """A delivery still in flight, with what is needed to (re)send it."""

    dispatch_id: UUID
    site_id: str
    power_kw: float
    state: str
    sent_at: datetime | None
    target_kind: str
    target_id: str
    issued_at: datetime
    expires_at: datetime
    duration_s: float | None = None
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Releasing:
    """A delivery whose release a cancel asked for (``cancelling``), to (re)send."""

    dispatch_id: UUID
    site_id: str
    release_sent_at: datetime | None
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A delivery of a dispatch being created."""

    site_id: str
    power_kw: float
    state: str
    sent_at: datetime | None
    updated_at: datetime
    reason: str | None = None

    @property
    def attempts(self) -> int:
        return 1 if self.state == "sent" else 0


@dataclass(frozen=True, slots=True)
class NewDispatch:
    """Every row of a dispatch being created (written in one statement)."""

    dispatch_id: UUID
    target_kind: str
    target_id: str
    power_kw: float
    state: str
    idempotency_key: str | None
    request_fingerprint: str
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime
    detail: str | None
    deliveries: tuple[NewDelivery, ...]
    events: tuple[EventRow, ...]
    targets: tuple[TargetRow, ...]
    duration_s: float | None = None
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Measured:
    """Delivered power of one dispatch, measured from its assets' telemetry."""

    dispatch_id: UUID
    per_asset: dict[str, float | None]  # asset id -> mean power in the window (None: no reading)
    delivered_kw: float | None  # their sum, when every asset has a reading
    measured_at: datetime


__all__ = [
    "DeliveryChange",
    "DeliveryRow",
    "DispatchChange",
    "DispatchRow",
    "EventRow",
    "Locked",
    "Measured",
    "NewDelivery",
    "NewDispatch",
    "OpenDelivery",
    "Released",
    "Releasing",
    "Taken",
    "TargetRow",
]
