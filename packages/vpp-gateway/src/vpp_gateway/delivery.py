"""The closed loop of a site or group setpoint: split, apply at once, redistribute, report.

1. Split the request with `vpp_split` over the online dispatchable assets, each with its
   static limits, the live envelope of its last reading and its minimum stable load.
2. Command every allocation concurrently, each device bounded by the device timeout (a
   slow device holds no other; its abandoned command is cancelled, so it never lands).
3. What the devices did not take (one set less, refused, timed out) is split again over the
   assets that took all they were asked, within what their envelopes have left; at most
   `MAX_PASSES` times. The applied total then equals the request whenever the site can do it.
4. The result says, per asset, what it was commanded, what it set and why it fell short.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from vpp_split import AssetShare, Limit, SplitResult, split

from .devices import DeviceError
from .limits import TOLERANCE_KW, device_limit, fault, num, split_limit, timeout
from .log import EventLog
from .model import Allocation, Limited
from .runtime import AssetRuntime

#: Redistribution passes after the first split (each re-splits what is still missing).
MAX_PASSES = 3


@dataclass(frozen=True, slots=True)
class Outcome:
    """One command to one device: what it set (None: not confirmed) or why it failed."""

    applied_kw: float | None
    limit: Limited | None = None


Command = Callable[[AssetRuntime, float], Awaitable[Outcome]]


async def command(asset: AssetRuntime, power_kw: float, timeout_s: float) -> Outcome:
    """Command ``power_kw``; a device that takes longer than ``timeout_s`` is abandoned.

    Abandoning cancels the device call, so a late command never lands after the ack.
    """
    try:
        applied = await asyncio.wait_for(asset.device.apply(power_kw), timeout_s)
    except TimeoutError:
        return Outcome(None, timeout(timeout_s))
    except DeviceError as exc:
        return Outcome(None, fault(f"device error: {exc}"))
    except Exception as exc:  # a broken adapter fails its own asset, not the whole site
        return Outcome(None, fault(f"device adapter error: {type(exc).__name__}: {exc}"))
    if not math.isfinite(applied):
        return Outcome(None, fault(f"device reported {applied} kW as set"))
    return Outcome(applied)


def live_share(asset: AssetRuntime) -> AssetShare:
    """What `vpp_split` needs of one asset: static limits, live envelope, minimum stable load."""
    lo, hi = asset.limits.min_kw, asset.limits.max_kw
    env = asset.envelope
    return AssetShare(
        asset.asset_id,
        capacity_kw=asset.config.capacity_kw,
        min_kw=lo if math.isfinite(lo) else None,
        max_kw=hi if math.isfinite(hi) else None,
        online=asset.online and asset.accepted,
        available_min_kw=env.min_kw,
        available_max_kw=env.max_kw,
        min_stable_kw=asset.min_stable_kw,
    )


def _shifted(value: float | None, by: float) -> float | None:
    return None if value is None else value - by


def headroom_share(share: AssetShare, applied_kw: float) -> AssetShare:
    """``share`` as the change it can still take from ``applied_kw`` (same weight).

    A semi-continuous asset that runs stays on (its range stops at its minimum stable
    load); one that is off may still be started.
    """
    lo, hi = share.bounds_kw
    stable = share.min_stable_kw
    if stable and applied_kw > TOLERANCE_KW:
        lo = max(lo, stable)
    elif stable and applied_kw < -TOLERANCE_KW:
        hi = min(hi, -stable)
    on = bool(stable) and abs(applied_kw) > TOLERANCE_KW
    return AssetShare(
        share.asset_id,
        capacity_kw=share.capacity_kw,
        min_kw=lo - applied_kw if math.isfinite(lo) else None,
        max_kw=hi - applied_kw if math.isfinite(hi) else None,
        available_min_kw=_shifted(share.available_min_kw, applied_kw),
        available_max_kw=_shifted(share.available_max_kw, applied_kw),
        min_stable_kw=None if on else stable,
    )


@dataclass(slots=True)
class _Asset:
    """One asset through the passes of a delivery."""

    runtime: AssetRuntime
    share: AssetShare
    commanded_kw: float
    applied_kw: float | None = None
    #: From the device (fault, timeout, a different value): it takes no further passes.
    device: Limited | None = None
    #: From the last split it took part in: (which limit, raising?).
    split: tuple[Limit, bool] | None = None

    @property
    def takes_more(self) -> bool:
        return self.device is None and self.applied_kw is not None


@dataclass(frozen=True, slots=True)
class Delivery:
    """The result of one site or group setpoint."""

    requested_kw: float
    first: SplitResult
    allocations: tuple[Allocation, ...]
    applied_kw: float
    shortfall_kw: float
    passes: int
    #: The log fields of the setpoint (its id, target).
    context: Mapping[str, object]

    @property
    def confirmed(self) -> bool:
        """At least one device confirmed a command (else nothing could be applied)."""
        return any(a.applied_kw is not None for a in self.allocations)


def _direction(result: SplitResult) -> bool:
    """True when the split had to raise power (its limits are upper ones)."""
    return (result.shortfall_kw or result.requested_kw) > 0


def _note_limits(
    assets: Mapping[str, _Asset], result: SplitResult, values: Mapping[str, float]
) -> None:
    """Each asset's limit in ``result``; ``values``: the power each will hold after it."""
    up = _direction(result)
    for asset_id, value in values.items():
        a = assets[asset_id]
        limit = result.limited_by.get(asset_id)
        stable = a.share.min_stable_kw
        # A running unit kept on in a re-split reports its minimum as a bound: name it.
        on_at_minimum = bool(stable) and abs(abs(value) - (stable or 0.0)) <= TOLERANCE_KW
        if limit and on_at_minimum and (value > 0) != up:
            limit = "min_stable"
        a.split = (limit, up) if limit is not None else None


def shortfall(requested_kw: float, applied_kw: float) -> float:
    """``requested - applied`` on the split's 1 W grid: 0.0 within half a step, never -0.0."""
    gap = requested_kw - applied_kw
    return 0.0 if abs(gap) <= TOLERANCE_KW else round(gap, 3) + 0.0


class Deliverer:
    """Runs the closed loop for one setpoint; ``send`` commands one device.

    ``context``: the fields every log line of this setpoint starts with (its id, target).
    """

    def __init__(self, send: Command, log: EventLog, context: Mapping[str, object]) -> None:
        self._send = send
        self._log = log
        self._context = dict(context)

    async def run(self, requested_kw: float, fleet: Sequence[AssetRuntime]) -> Delivery:
        """Split ``requested_kw`` over ``fleet`` and apply it (ValueError: the split refused)."""
        by_id = {a.asset_id: a for a in fleet}
        shares = [live_share(a) for a in fleet]
        first = split(requested_kw, shares)
        self._log.info(
            "split",
            **self._context,
            requested_kw=first.requested_kw,
            allocated_kw=first.allocated_kw,
            shortfall_kw=first.shortfall_kw,
            policy=first.policy,
            allocations=",".join(f"{k}={num(v)}" for k, v in first.allocations.items()),
            limited=_limited_text(first.limited_by),
        )
        share_of = {s.asset_id: s for s in shares}
        assets = {i: _Asset(by_id[i], share_of[i], kw) for i, kw in first.allocations.items()}
        _note_limits(assets, first, first.allocations)
        orders = dict(first.allocations)
        passes = 0
        while True:
            await self._apply(assets, orders)
            missing = first.requested_kw - _total(assets.values())
            if abs(missing) <= TOLERANCE_KW or passes == MAX_PASSES:
                break
            orders = self._resplit(assets, missing, passes + 1)
            if not orders:
                break
            passes += 1
        return _result(requested_kw, first, assets.values(), passes, self._context)

    async def _apply(self, assets: Mapping[str, _Asset], orders: Mapping[str, float]) -> None:
        ids = list(orders)
        outcomes = await asyncio.gather(*(self._send(assets[i].runtime, orders[i]) for i in ids))
        for asset_id, outcome in zip(ids, outcomes, strict=True):
            a = assets[asset_id]
            a.commanded_kw = orders[asset_id]
            if outcome.applied_kw is None:
                a.device = outcome.limit
                continue
            a.applied_kw = outcome.applied_kw
            a.device = device_limit(a.runtime, a.commanded_kw, outcome.applied_kw)

    def _resplit(
        self, assets: Mapping[str, _Asset], missing_kw: float, pass_no: int
    ) -> dict[str, float]:
        """New commands for the assets that took everything, sharing ``missing_kw``."""
        takers = [a for a in assets.values() if a.takes_more]
        if not takers:
            return {}
        narrowed = [headroom_share(a.share, a.applied_kw or 0.0) for a in takers]
        try:
            result = split(missing_kw, narrowed)
        except ValueError as exc:  # e.g. a device set a value off every grid point it has
            self._log.warning("resplit_failed", **self._context, error=str(exc))
            return {}
        held = {i: (assets[i].applied_kw or 0.0) + kw for i, kw in result.allocations.items()}
        _note_limits(assets, result, held)
        orders = {i: held[i] for i, kw in result.allocations.items() if abs(kw) > TOLERANCE_KW}
        self._log.info(
            "resplit",
            **self._context,
            pass_no=pass_no,
            missing_kw=missing_kw,
            over=len(takers),
            allocated_kw=result.allocated_kw,
            allocations=",".join(f"{k}={num(v)}" for k, v in orders.items()) or None,
        )
        return orders


def _total(assets: Iterable[_Asset]) -> float:
    return math.fsum(a.applied_kw or 0.0 for a in assets)


def _limited_text(limited: Mapping[str, str]) -> str | None:
    return ",".join(f"{k}={v}" for k, v in limited.items()) or None


def _final_limit(a: _Asset, met: bool) -> Limited | None:
    """The device's reason, else the split's; a plain static bound only when short."""
    if a.device is not None:
        return a.device
    if a.split is None:
        return None
    limit, up = a.split
    if met and limit == "bound":
        return None  # the normal result of clamping, not worth a reason
    return split_limit(a.runtime, limit, up, a.applied_kw or 0.0)


def _result(
    requested_kw: float,
    first: SplitResult,
    assets: Iterable[_Asset],
    passes: int,
    context: Mapping[str, object],
) -> Delivery:
    assets = list(assets)
    applied = round(_total(assets), 6) + 0.0
    short = shortfall(requested_kw, applied)
    allocations = tuple(
        Allocation(a.runtime.asset_id, a.commanded_kw, a.applied_kw, _final_limit(a, not short))
        for a in assets
    )
    return Delivery(requested_kw, first, allocations, applied, short, passes, context)
