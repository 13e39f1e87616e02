"""Which sites a new dispatch goes to, and with what share (DESIGN.md §3a, §4).

An asset or site target is one delivery. A group is split across its member sites with
`vpp_split`, each site as one continuous share over its **live aggregate envelope**: the
sum over its dispatchable assets of the asset's fresh envelope (clamped into its
registry limits), or its registry limits when its envelope is stale or absent (an older
gateway). The weight of a site is its headroom in the request's direction, so a site
with more room takes more. Semi-continuous assets count as continuous here; the
gateway commits them (docs/decisions.md, "Group split").

Member sites offline while others are online take no share (it goes to the online ones)
and are recorded as ``skipped``; with none online, every member holds its share pending.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from vpp_split import AssetShare, split

from ..domain import NOT_DISPATCHABLE_KINDS, DeliveryPlan, DispatchRequest, Envelope, Site
from ..errors import ValidationFailedError
from ..registry import Registry

# Stands in for "no limit" (an asset without capacity or bounds): vpp_split wants finite.
_UNBOUNDED_KW = 1e9
# The weight of a site with no room in the request's direction: positive, so the split
# stays proportional for the others (a zero weight makes vpp_split fall back to equal).
_MIN_WEIGHT = 1e-3
SKIPPED_REASON = "offline at dispatch time"
_STEP_KW = 0.001  # vpp_split's default grid
_PER_KW = 1000  # grid points per kW

#: ``envelopes(asset_ids, max_age_s)``: the fresh live envelopes by asset (`Ingest.envelopes`).
Envelopes = Callable[[Sequence[str], float], Awaitable[Mapping[str, Envelope]]]
#: ``online(site_ids)``: the sites whose gateway is connected to some replica.
Online = Callable[[list[str]], Awaitable[set[str]]]


@dataclass(frozen=True, slots=True)
class Plan:
    """The deliveries of a new dispatch and, for a group, how the split went."""

    deliveries: tuple[DeliveryPlan, ...]
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class SiteEnvelope:
    """A site's aggregate: registry limits, live envelope, and how many assets reported."""

    site_id: str
    registry: tuple[float, float]
    live: tuple[float, float]
    reported: int  # dispatchable assets with a fresh envelope
    assets: int  # dispatchable assets


class Planner:
    """Plans deliveries from the registry, who is online and the live envelopes."""

    def __init__(
        self, registry: Registry, online: Online, envelopes: Envelopes, *, max_age_s: float
    ) -> None:
        self._registry = registry
        self._online = online
        self._envelopes = envelopes
        self._max_age_s = max_age_s

    async def plan(self, req: DispatchRequest) -> Plan:
        """Which sites get what share. Raises NotFound / ValidationFailed."""
        if req.target_kind == "asset":
            asset = await self._registry.get_asset(req.target_id)
            if not asset.dispatchable:
                raise ValidationFailedError(
                    f"asset {asset.asset_id!r} is a {asset.kind}: it takes no setpoints",
                    field="asset_id",
                )
            online = asset.site_id in await self._online([asset.site_id])
            return Plan((DeliveryPlan(asset.site_id, req.power_kw, online),))
        if req.target_kind == "site":
            site = await self._registry.get_site(req.target_id)
            online = site.site_id in await self._online([site.site_id])
            return Plan((DeliveryPlan(site.site_id, req.power_kw, online),))
        sites = await self._registry.group_sites(req.target_id)
        if not sites:
            raise ValidationFailedError(
                f"group {req.target_id!r} has no member sites", field="group_id"
            )
        online_ids = await self._online([s.site_id for s in sites])
        sharing = [s for s in sites if s.site_id in online_ids] or sites
        asset_ids = [a.asset_id for s in sharing for a in s.assets if a.dispatchable]
        live = await self._envelopes(asset_ids, self._max_age_s)
        return split_group(req.power_kw, sites, online_ids, live)


def connected_plan(req: DispatchRequest, site_id: str) -> Plan:
    """The plan of an asset or site dispatch whose gateway (of ``site_id``) is connected
    to this replica, taken from the session alone: one delivery, online. What it assumes
    of the registry (an asset still registered to that site, and dispatchable) the
    creating statement checks (`dispatch_create.create_if_current`); when it does not hold,
    the dispatch is planned again by `Planner.plan`."""
    return Plan((DeliveryPlan(site_id, req.power_kw, online=True),))


def split_group(
    power_kw: float, sites: Sequence[Site], online: set[str], live: Mapping[str, Envelope]
) -> Plan:
    """Split a group total across its member sites by their live aggregate envelopes.

    The online members share the total; an offline member is ``skipped`` (no share).
    With none online, every member gets its share and holds it pending.
    """
    sharing = [s for s in sites if s.site_id in online] or list(sites)
    aggregates = [site_envelope(s, live) for s in sharing]
    shares = [site_share(a, power_kw) for a in aggregates]
    try:
        result = split(power_kw, shares, step=_STEP_KW)
    except ValueError as exc:  # e.g. a total beyond what the grid can count
        raise ValidationFailedError(f"cannot split this group: {exc}", field="power_kw") from None
    plans = [DeliveryPlan(sid, kw, sid in online) for sid, kw in result.allocations.items()]
    skipped = sorted(s.site_id for s in sites if s.site_id not in {x.site_id for x in sharing})
    plans += [DeliveryPlan(sid, 0.0, False, skipped=True) for sid in skipped]
    detail = result.explain() + _sources(aggregates)
    if skipped:
        detail += f"; {SKIPPED_REASON}, no share: {' '.join(skipped)}"
    return Plan(tuple(sorted(plans, key=lambda p: p.site_id)), detail)


def site_envelope(site: Site, live: Mapping[str, Envelope]) -> SiteEnvelope:
    """The sums over the site's dispatchable assets of their registry limits and of
    their live envelopes (registry limits where none is fresh)."""
    reg_lo = reg_hi = live_lo = live_hi = 0.0
    reported = count = 0
    for asset in site.assets:
        if not asset.dispatchable:
            continue
        count += 1
        lo, hi = (min(max(b, -_UNBOUNDED_KW), _UNBOUNDED_KW) for b in asset.bounds)
        reg_lo, reg_hi = reg_lo + lo, reg_hi + hi
        env = live.get(asset.asset_id)
        if env is not None and _usable(env):
            reported += 1
            lo, hi = AssetShare(
                asset.asset_id,
                min_kw=lo,
                max_kw=hi,
                available_min_kw=env.available_min_kw,
                available_max_kw=env.available_max_kw,
            ).effective_bounds_kw
        live_lo, live_hi = live_lo + lo, live_hi + hi
    return SiteEnvelope(
        site.site_id, _outward(reg_lo, reg_hi), _outward(live_lo, live_hi), reported, count
    )


def _outward(lo: float, hi: float) -> tuple[float, float]:
    """Bounds within ±`_UNBOUNDED_KW` and rounded outward to the split's 1 W grid (by
    less than 1 W), so that each holds a grid point: vpp_split refuses bounds that hold
    none (an envelope such as [12.3456, 12.3456])."""
    lo, hi = max(lo, -_UNBOUNDED_KW) * _PER_KW, min(hi, _UNBOUNDED_KW) * _PER_KW
    # A value on the grid whose product carries float noise (0.29 * 1000) stays put.
    lo = round(lo) if abs(lo - round(lo)) < 1e-6 else math.floor(lo)
    hi = round(hi) if abs(hi - round(hi)) < 1e-6 else math.ceil(hi)
    return lo / _PER_KW, hi / _PER_KW


def site_share(agg: SiteEnvelope, power_kw: float) -> AssetShare:
    """The site as one `AssetShare`: its registry limits, narrowed by its live envelope,
    weighted by its live headroom in the direction of ``power_kw``."""
    lo, hi = agg.live
    room = hi if power_kw > 0 else -lo if power_kw < 0 else max(hi, -lo)
    # A site with no limit known stays unweighted, as before: vpp_split splits equally.
    weight = None if room >= _UNBOUNDED_KW else max(room, _MIN_WEIGHT)
    return AssetShare(
        agg.site_id,
        capacity_kw=weight,
        min_kw=agg.registry[0],
        max_kw=agg.registry[1],
        available_min_kw=lo,
        available_max_kw=hi,
    )


def _usable(env: Envelope) -> bool:
    """An envelope the split can take: finite ends, in order (ingest checks too)."""
    ends = [x for x in (env.available_min_kw, env.available_max_kw) if x is not None]
    if not ends or not all(math.isfinite(x) for x in ends):
        return False
    lo, hi = env.available_min_kw, env.available_max_kw
    return lo is None or hi is None or lo <= hi


def _sources(aggregates: Iterable[SiteEnvelope]) -> str:
    """Which sites were split by live envelope and which by registry limits."""
    live = [a.site_id for a in aggregates if a.assets and a.reported == a.assets]
    partly = [a.site_id for a in aggregates if 0 < a.reported < a.assets]
    registry = [a.site_id for a in aggregates if a.reported == 0]
    parts = [
        f"{name}: {' '.join(ids)}"
        for name, ids in (
            ("live envelope", live),
            ("partly live", partly),
            ("registry limits", registry),
        )
        if ids
    ]
    return "; " + "; ".join(parts) if parts else ""


__all__ = [
    "NOT_DISPATCHABLE_KINDS",
    "SKIPPED_REASON",
    "Envelopes",
    "Online",
    "Plan",
    "Planner",
    "SiteEnvelope",
    "connected_plan",
    "site_envelope",
    "site_share",
    "split_group",
]
