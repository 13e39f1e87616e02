"""Legacy single-asset rules (DESIGN.md §2): messages without asset_id mean the session's asset.

A legacy agent registers with only ``Register.asset_id`` and sends telemetry and acks
without ``asset_id``; the headend sends it setpoints without a target. These helpers
are the one place both sides apply that rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import betterproto2

from ._generated.vpp.agent.v1 import Register, Setpoint, Telemetry

TargetKind = Literal["asset", "site", "group", "default"]


@dataclass(frozen=True, slots=True)
class SetpointTarget:
    """Where a setpoint applies. ``kind == "default"`` (legacy) means the session's only asset."""

    kind: TargetKind
    id: str


def is_legacy_register(register: Register) -> bool:
    """True for a legacy single-asset agent: an ``asset_id`` and no asset list."""
    return not register.assets and bool(register.asset_id)


def telemetry_asset_id(reading: Telemetry, default_asset_id: str) -> str:
    """The asset a reading belongs to: its own ``asset_id``, else the session's default.

    Returns "" when neither is set (a reading that cannot be attributed).
    """
    return reading.asset_id or default_asset_id


def setpoint_target(setpoint: Setpoint, default_asset_id: str = "") -> SetpointTarget:
    """The target of a setpoint; a target-less (legacy) setpoint means ``default_asset_id``."""
    field, value = betterproto2.which_one_of(setpoint, "target")
    if field == "asset_id" and value:
        return SetpointTarget("asset", str(value))
    if field == "site_id" and value:
        return SetpointTarget("site", str(value))
    if field == "group_id" and value:
        return SetpointTarget("group", str(value))
    return SetpointTarget("default", default_asset_id)
