"""Setpoint handling: check, clamp, split, apply, journal, ack.

Order of checks for one setpoint: already in the journal → the journaled ack again
(never applied twice); past ``expires_at`` → EXPIRED; unknown or foreign target, a
meter, a non-finite power → REJECTED; otherwise applied (clamped to the asset's limits,
the ack says so) → APPLIED, or FAILED when a device refuses or times out.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vpp_split import AssetShare, SplitResult, split

from .clock import Clock
from .devices import DeviceError
from .log import EventLog
from .model import Ack, AckState, Allocation, SetpointCommand
from .runtime import AssetFleet, AssetRuntime
from .settings import GatewaySettings
from .state import StateStore

#: A journaled setpoint is remembered this long past its expiry, to re-ack a late re-delivery.
JOURNAL_GRACE_S = 600.0


@dataclass(frozen=True, slots=True)
class Applied:
    """Outcome of one asset's part of a setpoint."""

    asset_id: str
    state: AckState
    applied_kw: float | None = None
    clamped: bool = False
    reason: str = ""


def _num(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def clamp_note(requested: float, lo: float, hi: float) -> tuple[float, bool, str]:
    """(power within [lo, hi], whether it moved, a note for the ack)."""
    if requested > hi:
        return hi, True, f"clamped to max_kw {_num(hi)}"
    if requested < lo:
        return lo, True, f"clamped to min_kw {_num(lo)}"
    return requested, False, ""


def shares(fleet: AssetFleet) -> list[AssetShare]:
    """What `vpp_split` needs of each dispatchable asset; offline or rejected ones take no share."""
    out = []
    for a in fleet:
        if not a.dispatchable:
            continue
        lo, hi = a.limits.min_kw, a.limits.max_kw
        out.append(
            AssetShare(
                a.asset_id,
                capacity_kw=a.config.capacity_kw,
                min_kw=lo if math.isfinite(lo) else None,
                max_kw=hi if math.isfinite(hi) else None,
                online=a.online and a.accepted,
            )
        )
    return out


class SetpointHandler:
    """Handles setpoints one at a time; acks go out through ``emit``."""

    def __init__(
        self,
        settings: GatewaySettings,
        fleet: AssetFleet,
        store: StateStore,
        clock: Clock,
        emit: Callable[[Ack], None],
        log: EventLog | None = None,
    ) -> None:
        self._settings = settings
        self._fleet = fleet
        self._store = store
        self._clock = clock
        self._emit = emit
        self._log = log or EventLog()

    def _ack_asset_id(self, cmd: SetpointCommand) -> str:
        return cmd.target_id if cmd.target_kind == "asset" else ""

    async def handle(self, cmd: SetpointCommand) -> Ack:
        """Ack RECEIVED, then decide, apply, journal and ack the final state (returned)."""
        now = self._clock.now()
        asset_id = self._ack_asset_id(cmd)
        self._emit(Ack(cmd.setpoint_id, AckState.RECEIVED, now, asset_id=asset_id))
        if not cmd.setpoint_id:
            final = Ack("", AckState.REJECTED, now, asset_id, reason="setpoint has no setpoint_id")
            self._emit(final)
            return final
        prior = self._store.journal_get(cmd.setpoint_id)
        if prior is not None:
            self._log.info(
                "setpoint_duplicate",
                setpoint_id=cmd.setpoint_id,
                state=prior.state.value,
                note="re-acked, not re-applied",
            )
            self._emit(prior)
            return prior
        final = await self._decide(cmd, now)
        keep = (
            cmd.expires_at.timestamp()
            if cmd.expires_at
            else now.timestamp() + self._settings.journal_retention_s
        )
        await self._store.journal_put(final, max(keep, now.timestamp()) + JOURNAL_GRACE_S)
        self._log.info(
            "setpoint",
            setpoint_id=cmd.setpoint_id,
            target=f"{cmd.target_kind}:{cmd.target_id}" if cmd.target_id else cmd.target_kind,
            requested_kw=cmd.power_kw,
            state=final.state.value,
            applied_kw=final.applied_kw,
            clamped=final.clamped or None,
            reason=final.reason or None,
        )
        self._emit(final)
        return final

    async def _decide(self, cmd: SetpointCommand, now: datetime) -> Ack:
        asset_id = self._ack_asset_id(cmd)

        def done(state: AckState, reason: str = "") -> Ack:
            return Ack(cmd.setpoint_id, state, self._clock.now(), asset_id, reason=reason)

        if cmd.expires_at is not None and now > cmd.expires_at:
            late = (now - cmd.expires_at).total_seconds()
            return done(AckState.EXPIRED, f"arrived {late:.1f} s after expires_at")
        if not math.isfinite(cmd.power_kw):
            return done(AckState.REJECTED, f"power_kw {cmd.power_kw} is not a finite number")
        kind, target = cmd.target_kind, cmd.target_id
        if kind == "default":
            if not self._fleet.legacy:
                return done(
                    AckState.REJECTED, "setpoint has no target (only legacy agents accept that)"
                )
            return await self._single(cmd, self._fleet.only())
        if kind == "asset":
            asset = self._fleet.get(target)
            if asset is None:
                return done(
                    AckState.REJECTED, f"unknown asset {target!r} (not served by this gateway)"
                )
            if not asset.accepted:
                return done(
                    AckState.REJECTED,
                    f"asset {target!r} was rejected by the headend: {asset.reject_reason}",
                )
            return await self._single(cmd, asset)
        if kind == "site" and target != self._settings.site_id:
            return done(
                AckState.REJECTED,
                f"site {target!r} is not this gateway's site ({self._settings.site_id})",
            )
        if kind == "group" and self._settings.groups and target not in self._settings.groups:
            return done(
                AckState.REJECTED,
                f"group {target!r} is not one of this site's groups "
                f"({', '.join(self._settings.groups)})",
            )
        return await self._split(cmd)

    async def _apply(self, asset: AssetRuntime, requested: float, setpoint_id: str) -> Applied:
        if not asset.dispatchable:
            return Applied(
                asset.asset_id,
                AckState.REJECTED,
                reason=f"{asset.config.kind} {asset.asset_id} takes no setpoints",
            )
        target, clamped, note = clamp_note(requested, asset.limits.min_kw, asset.limits.max_kw)
        if math.isinf(target):
            return Applied(
                asset.asset_id,
                AckState.REJECTED,
                reason=f"{_num(requested)} kW cannot be clamped to unbounded limits",
            )
        try:
            applied = await asyncio.wait_for(
                asset.device.apply(target), self._settings.device_timeout
            )
        except DeviceError as exc:
            return Applied(asset.asset_id, AckState.FAILED, reason=f"device error: {exc}")
        except TimeoutError:
            return Applied(
                asset.asset_id,
                AckState.FAILED,
                reason=f"device did not answer in {self._settings.device_timeout:g} s",
            )
        if abs(applied - target) > 1e-9:
            clamped = True
            note = f"device set {_num(applied)} kW instead of {_num(target)} kW"
        asset.setpoint_kw = applied
        asset.setpoint_id = setpoint_id
        asset.applied_at = self._clock.now()
        return Applied(asset.asset_id, AckState.APPLIED, applied, clamped, note)

    async def _single(self, cmd: SetpointCommand, asset: AssetRuntime) -> Ack:
        r = await self._apply(asset, cmd.power_kw, cmd.setpoint_id)
        return Ack(
            cmd.setpoint_id,
            r.state,
            self._clock.now(),
            self._ack_asset_id(cmd),
            reason=r.reason,
            applied_kw=r.applied_kw,
            clamped=r.clamped,
        )

    async def _split(self, cmd: SetpointCommand) -> Ack:
        asset_shares = shares(self._fleet)
        if not any(s.online for s in asset_shares):
            return Ack(
                cmd.setpoint_id,
                AckState.REJECTED,
                self._clock.now(),
                reason="no online dispatchable asset to split the setpoint across",
            )
        result: SplitResult = split(cmd.power_kw, asset_shares)
        self._log.info(
            "split",
            setpoint_id=cmd.setpoint_id,
            target=f"{cmd.target_kind}:{cmd.target_id}",
            requested_kw=result.requested_kw,
            allocated_kw=result.allocated_kw,
            shortfall_kw=result.shortfall_kw,
            policy=result.policy,
            allocations=",".join(f"{k}={_num(v)}" for k, v in result.allocations.items()),
        )
        outcomes = [
            await self._apply(self._fleet[a], kw, cmd.setpoint_id)
            for a, kw in result.allocations.items()
        ]
        applied = [o for o in outcomes if o.state is AckState.APPLIED and o.applied_kw is not None]
        failed = [o for o in outcomes if o.state is not AckState.APPLIED]
        allocations = tuple(Allocation(o.asset_id, o.applied_kw or 0.0) for o in applied)
        notes = [f"{o.asset_id}: {o.reason}" for o in failed]
        clamped = abs(result.shortfall_kw) > 1e-9 or any(o.clamped for o in applied)
        if abs(result.shortfall_kw) > 1e-9:
            notes.insert(
                0,
                f"shortfall {_num(result.shortfall_kw)} kW: request outside what the "
                f"online assets can do",
            )
        notes += [f"{o.asset_id}: {o.reason}" for o in applied if o.clamped]
        return Ack(
            cmd.setpoint_id,
            AckState.FAILED if failed else AckState.APPLIED,
            self._clock.now(),
            reason="; ".join(notes),
            applied_kw=sum(a.power_kw for a in allocations),
            allocations=allocations,
            clamped=clamped,
        )
