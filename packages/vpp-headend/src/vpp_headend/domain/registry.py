"""Sites, assets and the gateways that serve them: what a Register claims, what the
registry decides, and what the headend answers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from uuid import UUID

from vpp_protocol.sitefile import AssetConfig

from ..limits import MAX_ABS_KW, MAX_CREDENTIAL_CHARS

#: Why the headend ends a gateway's session (the wire's CloseReason, lower case).
CloseReasonName = Literal[
    "superseded", "server_shutdown", "heartbeat_timeout", "unauthorized", "protocol_error"
]
#: Why a claimed asset was refused (the wire's RejectCode, lower case).
RejectCodeName = Literal["unknown_asset", "foreign_asset", "duplicate", "invalid", "unauthorized"]

ASSET_KINDS = ("pv", "bess", "meter", "genset", "ev_charger", "load", "other")
#: Kinds that take no setpoints and add to no site total (`Asset.dispatchable`), for the
#: checks and sums done in SQL.
NOT_DISPATCHABLE_KINDS = ("meter",)


@dataclass(frozen=True, slots=True)
class Asset:
    """One registered asset."""

    asset_id: str
    site_id: str
    kind: str
    capacity_kw: float | None = None
    min_kw: float | None = None
    max_kw: float | None = None
    energy_kwh: float | None = None

    @property
    def dispatchable(self) -> bool:
        """Meters measure; they take no setpoints and no share of a split."""
        return self.kind not in NOT_DISPATCHABLE_KINDS

    @property
    def bounds(self) -> tuple[float, float]:
        """Effective (min_kw, max_kw), with the site file's per-kind defaults."""
        kind = self.kind if self.kind in ASSET_KINDS else "other"
        cfg = AssetConfig(
            asset_id=self.asset_id,
            kind=kind,  # type: ignore[arg-type]  # checked just above
            capacity_kw=self.capacity_kw,
            min_kw=self.min_kw,
            max_kw=self.max_kw,
        )
        return cfg.bounds


@dataclass(frozen=True, slots=True)
class Site:
    """One registered site, its assets and its groups."""

    site_id: str
    assets: tuple[Asset, ...] = ()
    groups: tuple[str, ...] = ()
    telemetry_interval_s: float | None = None
    legacy: bool = False

    @property
    def capacity_kw(self) -> float:
        """Aggregate nameplate capacity of the dispatchable assets."""
        return sum(a.capacity_kw or 0.0 for a in self.assets if a.dispatchable)

    @property
    def bounds(self) -> tuple[float, float]:
        """Aggregate (min_kw, max_kw) of the dispatchable assets (may be infinite)."""
        lo = hi = 0.0
        for a in self.assets:
            if a.dispatchable:
                a_lo, a_hi = a.bounds
                lo, hi = lo + a_lo, hi + a_hi
        return lo, hi


@dataclass(frozen=True, slots=True)
class AssetClaim:
    """An asset as a gateway describes it in Register."""

    asset_id: str
    kind: str = "other"
    capacity_kw: float | None = None
    min_kw: float | None = None
    max_kw: float | None = None
    energy_kwh: float | None = None
    #: The per-asset credential the gateway presented ("" = none); never logged.
    credential: str = field(default="", repr=False)

    def problem(self) -> str | None:
        """Why this descriptor is invalid, or None."""
        for name in ("capacity_kw", "min_kw", "max_kw", "energy_kwh"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                return f"{name} is not finite"
            if value is not None and abs(value) > MAX_ABS_KW:
                return f"{name} is out of range (|{name}| > {MAX_ABS_KW:g})"
        if len(self.credential) > MAX_CREDENTIAL_CHARS:
            return f"credential is longer than {MAX_CREDENTIAL_CHARS} characters"
        if self.capacity_kw is not None and self.capacity_kw < 0:
            return "capacity_kw is negative"
        if self.min_kw is not None and self.max_kw is not None and self.min_kw > self.max_kw:
            return "min_kw is greater than max_kw"
        return None


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A gateway's Register."""

    site_id: str
    claims: tuple[AssetClaim, ...]
    agent_version: str = ""
    protocol_version: int = 0
    legacy_asset_id: str = ""

    @property
    def legacy(self) -> bool:
        """A legacy single-asset agent: only ``asset_id``, no asset list."""
        return not self.claims and bool(self.legacy_asset_id)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A claimed asset the headend refused, and why."""

    asset_id: str
    code: RejectCodeName
    reason: str


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """The registry's verdict on a Register."""

    site_known: bool
    accepted: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    default_asset_id: str = ""


@dataclass(frozen=True, slots=True)
class RegisterReply:
    """What the headend answers a Register with."""

    accepted: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    session_id: UUID
    epoch: int
    watermarks: dict[str, int]
    protocol_version: int
    default_asset_id: str
    heartbeat_interval_s: float


@dataclass(frozen=True, slots=True)
class GatewayView:
    """A known gateway (site) and its connection state."""

    site_id: str
    connected: bool
    connected_since: datetime | None
    last_seen: datetime | None
    assets_served: tuple[str, ...]
    remote: str | None
    agent_version: str | None
    epoch: int | None = None
    session_id: UUID | None = None
    disconnect_reason: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: The replica holding (or that last held) the stream; when it ended.
    replica: str | None = None
    disconnected_at: datetime | None = None
