"""Response shapes of a dispatch (GET /dispatch/{dispatch_id}, GET /dispatches: a page) and
the builders that fill them from a `DispatchView`."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from ..domain import DispatchView
from .paging import Page


class TargetRef(msgspec.Struct):
    kind: str
    id: str


class DeliveryOut(msgspec.Struct):
    site_id: str
    power_kw: float  # this site's share (requested of it)
    state: str
    sent_at: datetime | None
    updated_at: datetime
    reason: str | None
    allocated_kw: float | None = None  # what its devices took
    shortfall_kw: float | None = None  # power_kw minus allocated_kw; 0 when met
    applied_at: datetime | None = None
    # Time in force (DESIGN.md §3b): when its control ends by the gateway's clock (from
    # its APPLIED ack; null: no end or not said); a cancel's release: when it was asked,
    # when a Release last went out, when the gateway released, and why
    # (duration_ended | cancelled | failsafe; null when not said).
    in_force_until: datetime | None = None
    release_requested_at: datetime | None = None
    release_sent_at: datetime | None = None
    released_at: datetime | None = None
    release_cause: str | None = None


class AllocationOut(msgspec.Struct):
    asset_id: str
    site_id: str
    allocation_kw: float | None  # allocated to it by the split
    state: str
    applied_kw: float | None  # what the device set
    clamped: bool
    reason: str | None
    updated_at: datetime
    limit_reason: str | None = None  # why applied_kw falls short of allocation_kw
    limit_detail: str | None = None
    delivered_kw: float | None = None  # mean measured power after it was applied


class EventOut(msgspec.Struct):
    at: datetime
    state: str
    scope: str
    scope_id: str | None
    detail: str | None


class DispatchOut(msgspec.Struct):
    dispatch_id: UUID
    state: str
    target: TargetRef
    power_kw: float
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime
    deliveries: list[DeliveryOut]
    allocations: list[AllocationOut]
    transitions: list[EventOut]
    events: list[EventOut]
    split: str | None = None
    # What was delivered (DESIGN.md §3a): requested = power_kw; allocated: what the
    # devices took; shortfall: requested - allocated (0 when met); delivered: measured
    # from telemetry in the window after it was applied (null until measured).
    requested_kw: float | None = None
    allocated_kw: float | None = None
    shortfall_kw: float | None = None
    delivered_kw: float | None = None
    applied_at: datetime | None = None
    measured_at: datetime | None = None
    # Time in force as asked (one of them, or neither: until superseded, cancelled or
    # released) and the operator's cancel.
    duration_s: float | None = None
    ends_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    cancel_reason: str | None = None


class DispatchSummaryOut(msgspec.Struct):
    dispatch_id: UUID
    state: str
    target: TargetRef
    power_kw: float
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime
    deliveries: list[DeliveryOut]
    duration_s: float | None = None
    ends_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    # What was delivered, as in DispatchOut (null until known).
    requested_kw: float | None = None
    allocated_kw: float | None = None
    shortfall_kw: float | None = None
    delivered_kw: float | None = None
    measured_at: datetime | None = None


class DispatchPage(Page, kw_only=True):
    items: list[DispatchSummaryOut]


def _deliveries(v: DispatchView) -> list[DeliveryOut]:
    return [
        DeliveryOut(
            x.site_id,
            x.power_kw,
            x.state,
            x.sent_at,
            x.updated_at,
            x.reason,
            x.allocated_kw,
            x.shortfall_kw,
            x.applied_at,
            x.in_force_until,
            x.release_requested_at,
            x.release_sent_at,
            x.released_at,
            x.release_cause,
        )
        for x in v.deliveries
    ]


def dispatch_out(v: DispatchView) -> DispatchOut:
    events = [EventOut(e.at, e.state, e.scope, e.scope_id, e.detail) for e in v.events]
    return DispatchOut(
        dispatch_id=v.dispatch_id,
        state=v.state,
        target=TargetRef(v.target_kind, v.target_id),
        power_kw=v.power_kw,
        issued_at=v.issued_at,
        expires_at=v.expires_at,
        updated_at=v.updated_at,
        deliveries=_deliveries(v),
        allocations=[
            AllocationOut(
                t.asset_id,
                t.site_id,
                t.allocation_kw,
                t.state,
                t.applied_kw,
                t.clamped,
                t.reason,
                t.updated_at,
                t.limit_reason,
                t.limit_detail,
                t.delivered_kw,
            )
            for t in v.targets
        ],
        transitions=[e for e in events if e.scope == "dispatch"],
        events=events,
        split=v.detail,
        requested_kw=v.requested_kw,
        allocated_kw=v.allocated_kw,
        shortfall_kw=v.shortfall_kw,
        delivered_kw=v.delivered_kw,
        applied_at=v.applied_at,
        measured_at=v.measured_at,
        duration_s=v.duration_s,
        ends_at=v.ends_at,
        cancel_requested_at=v.cancel_requested_at,
        cancel_reason=v.cancel_reason,
    )


def dispatch_summary_out(v: DispatchView) -> DispatchSummaryOut:
    return DispatchSummaryOut(
        dispatch_id=v.dispatch_id,
        state=v.state,
        target=TargetRef(v.target_kind, v.target_id),
        power_kw=v.power_kw,
        issued_at=v.issued_at,
        expires_at=v.expires_at,
        updated_at=v.updated_at,
        deliveries=_deliveries(v),
        duration_s=v.duration_s,
        ends_at=v.ends_at,
        cancel_requested_at=v.cancel_requested_at,
        requested_kw=v.requested_kw,
        allocated_kw=v.allocated_kw,
        shortfall_kw=v.shortfall_kw,
        delivered_kw=v.delivered_kw,
        measured_at=v.measured_at,
    )
