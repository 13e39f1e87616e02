"""Setpoint handling: check, clamp, split, apply, journal, ack.

Order of checks for one setpoint: already in the journal → the journaled ack again
(never applied twice, also once released); past ``expires_at`` or past ``ends_at`` (its
time in force is over before it starts) → EXPIRED; unknown or foreign target, a meter, a
non-finite power, a bad ``duration_s`` → REJECTED; otherwise applied → APPLIED, or FAILED
when no device confirmed anything (it refused or timed out). An asset setpoint is clamped to the
asset's limits; a site or group total goes through the closed loop of `delivery` (split
on live envelopes, concurrent apply, redistribution). Either way the ack carries
``requested_kw``, what was applied, ``shortfall_kw`` and why an asset fell short.

An APPLIED setpoint controls the assets whose devices confirmed it (`control`) until its
end (the ack's ``ends_at``: the earlier of ``ends_at`` and the moment it is applied plus
``duration_s``), a newer setpoint, a release or the fail-safe (`releaser`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .control import JOURNAL_GRACE_S, control_end, duration_problem
from .delivery import Deliverer, Delivery, Outcome, command, shortfall
from .limits import DEVICE_REASONS, device_limit, num
from .model import Ack, AckState, Control, InForce, Limited, LimitReason, SetpointCommand
from .parts import ControlParts
from .runtime import AssetRuntime

__all__ = ["JOURNAL_GRACE_S", "SetpointHandler", "clamp_note"]


@dataclass(frozen=True, slots=True)
class _Decision:
    """A setpoint's final ack and, when APPLIED, the control it takes of each asset."""

    ack: Ack
    controls: tuple[Control, ...] = ()


def clamp_note(requested: float, lo: float, hi: float) -> tuple[float, bool, str]:
    """(power within [lo, hi], whether it moved, a note for the ack)."""
    if requested > hi:
        return hi, True, f"clamped to max_kw {num(hi)}"
    if requested < lo:
        return lo, True, f"clamped to min_kw {num(lo)}"
    return requested, False, ""


class SetpointHandler:
    """Handles setpoints one at a time; acks go out through ``parts.emit``."""

    def __init__(self, parts: ControlParts) -> None:
        self._settings = parts.settings
        self._fleet = parts.fleet
        self._store = parts.store
        self._control = parts.control
        self._clock = parts.clock
        self._emit = parts.emit
        self._log = parts.log

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
        async with self._control.lock:  # the duration loop and the fail-safe wait meanwhile
            final = await self._handle(cmd)
        self._emit(final)
        return final

    async def _handle(self, cmd: SetpointCommand) -> Ack:
        prior = self._store.journal_get(cmd.setpoint_id)
        if prior is not None:
            self._log.info(
                "setpoint_duplicate",
                setpoint_id=cmd.setpoint_id,
                state=prior.state.value,
                note="re-acked, not re-applied",
            )
            return prior
        now = self._clock.now()
        decision = await self._decide(cmd, now)
        final = decision.ack
        keep = (
            cmd.expires_at.timestamp()
            if cmd.expires_at
            else now.timestamp() + self._settings.journal_retention_s
        )
        keep = max(keep, now.timestamp()) + JOURNAL_GRACE_S
        if decision.controls:
            record = InForce(cmd.setpoint_id, final.asset_id, final.ends_at)
            await self._control.take(record, decision.controls, (final, keep))
        else:
            await self._store.journal_put(final, keep)
        self._log.info(
            "setpoint",
            setpoint_id=cmd.setpoint_id,
            target=f"{cmd.target_kind}:{cmd.target_id}" if cmd.target_id else cmd.target_kind,
            requested_kw=cmd.power_kw,
            state=final.state.value,
            applied_kw=final.applied_kw,
            shortfall_kw=final.shortfall_kw or None,
            limited=final.limit.reason.value if final.limit else None,
            clamped=final.clamped or None,
            reason=final.reason or None,
            ends_at=final.ends_at,
        )
        return final

    async def _decide(self, cmd: SetpointCommand, now: datetime) -> _Decision:
        asset_id = self._ack_asset_id(cmd)

        def done(state: AckState, reason: str = "") -> _Decision:
            return _Decision(
                Ack(cmd.setpoint_id, state, self._clock.now(), asset_id, reason=reason)
            )

        if cmd.expires_at is not None and now > cmd.expires_at:
            late = (now - cmd.expires_at).total_seconds()
            return done(AckState.EXPIRED, f"arrived {late:.1f} s after expires_at")
        if cmd.ends_at is not None and now >= cmd.ends_at:
            late = (now - cmd.ends_at).total_seconds()
            return done(
                AckState.EXPIRED, f"arrived {late:.1f} s after ends_at: its time in force is over"
            )
        if not math.isfinite(cmd.power_kw):
            return done(AckState.REJECTED, f"power_kw {cmd.power_kw} is not a finite number")
        if problem := duration_problem(cmd):
            return done(AckState.REJECTED, problem)
        ends = control_end(cmd, now)
        kind, target = cmd.target_kind, cmd.target_id
        if kind == "default":
            if not self._fleet.legacy:
                return done(
                    AckState.REJECTED, "setpoint has no target (only legacy agents accept that)"
                )
            return await self._single(cmd, self._fleet.only(), ends)
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
            return await self._single(cmd, asset, ends)
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
        return await self._split(cmd, ends)

    async def _send(
        self, asset: AssetRuntime, power_kw: float, setpoint_id: str, ends: datetime | None
    ) -> Outcome:
        """Command one device; what it confirms is in force from now (readings carry it)."""
        outcome = await command(asset, power_kw, self._settings.device_timeout)
        if outcome.applied_kw is not None:
            asset.note_applied(outcome.applied_kw, setpoint_id, self._clock.now(), ends)
        return outcome

    async def _single(
        self, cmd: SetpointCommand, asset: AssetRuntime, ends: datetime | None
    ) -> _Decision:
        """One asset: clamp to its static limits, command, report what it set and why."""

        def ack(state: AckState, reason: str, **fields: Any) -> _Decision:
            return _Decision(
                Ack(
                    cmd.setpoint_id,
                    state,
                    self._clock.now(),
                    self._ack_asset_id(cmd),
                    reason=reason,
                    **fields,
                )
            )

        if not asset.dispatchable:
            return ack(
                AckState.REJECTED, f"{asset.config.kind} {asset.asset_id} takes no setpoints"
            )
        target, clamped, note = clamp_note(cmd.power_kw, asset.limits.min_kw, asset.limits.max_kw)
        if math.isinf(target):
            return ack(
                AckState.REJECTED,
                f"{num(cmd.power_kw)} kW cannot be clamped to unbounded limits",
            )
        outcome = await self._send(asset, target, cmd.setpoint_id, ends)
        if outcome.applied_kw is None:
            failed = outcome.limit
            return ack(
                AckState.FAILED,
                failed.detail if failed else "device did not confirm",
                requested_kw=cmd.power_kw,
                shortfall_kw=shortfall(cmd.power_kw, 0.0),
                limit=failed,
            )
        applied = outcome.applied_kw
        device = device_limit(asset, target, applied)
        limit = device or (Limited(LimitReason.LIMITS, note) if clamped else None)
        applied_ack = ack(
            AckState.APPLIED,
            "; ".join(n for n in (note, device.detail if device else "") if n),
            applied_kw=applied,
            clamped=clamped or device is not None,
            requested_kw=cmd.power_kw,
            shortfall_kw=shortfall(cmd.power_kw, applied),
            limit=limit,
            ends_at=ends,
        )
        return replace(applied_ack, controls=(Control(asset.asset_id, cmd.setpoint_id, target),))

    async def _split(self, cmd: SetpointCommand, ends: datetime | None) -> _Decision:
        """A site or group total: the closed loop of `delivery` over the online assets."""
        target = f"{cmd.target_kind}:{cmd.target_id}"

        def ack(state: AckState, reason: str, **fields: Any) -> _Decision:
            return _Decision(
                Ack(cmd.setpoint_id, state, self._clock.now(), reason=reason, **fields)
            )

        fleet = [a for a in self._fleet if a.dispatchable]
        if not any(a.online and a.accepted for a in fleet):
            return ack(
                AckState.REJECTED, "no online dispatchable asset to split the setpoint across"
            )
        deliverer = Deliverer(
            lambda asset, kw: self._send(asset, kw, cmd.setpoint_id, ends),
            self._log,
            {"setpoint_id": cmd.setpoint_id, "target": target},
        )
        try:
            d = await deliverer.run(cmd.power_kw, fleet)
        except ValueError as exc:  # the assets as configured admit no split (see vpp_split)
            return ack(AckState.REJECTED, f"cannot split the setpoint: {exc}")
        state = AckState.APPLIED if d.confirmed else AckState.FAILED
        self._log.info("delivery", **_delivery_fields(d), state=state.value)
        decision = ack(
            state,
            _delivery_reason(d),
            applied_kw=d.applied_kw,
            allocations=d.allocations,
            clamped=bool(d.shortfall_kw),
            requested_kw=cmd.power_kw,
            shortfall_kw=d.shortfall_kw,
            ends_at=ends if state is AckState.APPLIED else None,
        )
        # Every asset whose device confirmed its share is under this setpoint (0 kW too).
        controls = tuple(
            Control(a.asset_id, cmd.setpoint_id, a.power_kw)
            for a in d.allocations
            if a.applied_kw is not None
        )
        return replace(decision, controls=controls)


def _delivery_fields(d: Delivery) -> dict[str, object]:
    """The ``event=delivery`` log line: requested, allocated, applied, shortfall, per asset."""
    return {
        **d.context,
        "requested_kw": d.requested_kw,
        "allocated_kw": d.first.allocated_kw,
        "applied_kw": d.applied_kw,
        "shortfall_kw": d.shortfall_kw,
        "passes": d.passes,
        "applied": ",".join(
            f"{a.asset_id}={num(a.applied_kw) if a.applied_kw is not None else '-'}"
            for a in d.allocations
        ),
        "limited": ",".join(
            f"{a.asset_id}={a.limit.reason.value}" for a in d.allocations if a.limit
        )
        or None,
    }


def _delivery_reason(d: Delivery) -> str:
    """The ack's text: the shortfall, what each device did wrong, whether shares moved."""
    notes = [
        f"{a.asset_id}: {a.limit.detail}"
        for a in d.allocations
        if a.limit is not None and a.limit.reason in DEVICE_REASONS
    ]
    if d.shortfall_kw:
        notes.insert(
            0, f"shortfall {num(d.shortfall_kw)} kW: more than the online assets can do now"
        )
    if d.passes:
        notes.append(f"redistributed in {d.passes} pass{'es' if d.passes > 1 else ''}")
    return "; ".join(notes)
