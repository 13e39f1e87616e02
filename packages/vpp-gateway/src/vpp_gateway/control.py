"""The control in force (DESIGN.md §3b): which setpoint controls each asset now, until when.

A setpoint applied to an asset controls it until its end, a newer setpoint for that asset
(which simply takes it over: the device never sees its fallback in between), a release
from the headend, or the fail-safe. The table lives in memory and in the state database
(one transaction per change, with the journal entry that goes with it), so a restarted
gateway knows what was in force and for how long.

Whoever changes the control holds `ControlTable.lock` while it commands the devices: the
setpoint worker, the duration and fail-safe loop and the headend's releases take turns.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from .model import Ack, Control, InForce, ReleaseCause, SetpointCommand
from .state import ControlWrite, StateStore

#: A journaled setpoint is remembered this long past its expiry, to re-ack a late re-delivery.
JOURNAL_GRACE_S = 600.0
#: Longest time in force a setpoint may ask for (ten years); longer is refused.
MAX_DURATION_S = 10 * 366 * 86400.0


def duration_problem(cmd: SetpointCommand) -> str:
    """Why ``cmd.duration_s`` is unacceptable; empty when it is fine (or unset)."""
    d = cmd.duration_s
    if d is None:
        return ""
    if not (math.isfinite(d) and d > 0):
        return f"duration_s {d} must be a positive number of seconds"
    if d > MAX_DURATION_S:
        return f"duration_s {d:g} is longer than {MAX_DURATION_S:g} s (ten years)"
    return ""


def control_end(cmd: SetpointCommand, applied_at: datetime) -> datetime | None:
    """The earlier of ``cmd.ends_at`` and ``applied_at + duration_s``; None = no end."""
    ends = [] if cmd.ends_at is None else [cmd.ends_at]
    if cmd.duration_s is not None:
        ends.append(applied_at + timedelta(seconds=cmd.duration_s))
    return min(ends) if ends else None


class ControlTable:
    """Setpoints in force and the per-asset control records; `load` it from the store."""

    def __init__(
        self,
        store: StateStore,
        in_force: Iterable[InForce] = (),
        controls: Iterable[Control] = (),
    ) -> None:
        self._store = store
        self._in_force = {f.setpoint_id: f for f in in_force}
        self._controls = {c.asset_id: c for c in controls}
        self.lock = asyncio.Lock()
        #: Set when an end may have moved earlier: the duration loop recomputes its sleep.
        self.changed = asyncio.Event()

    @classmethod
    def load(cls, store: StateStore) -> ControlTable:
        """The table as the state database has it (blocking; at start-up)."""
        in_force, controls = store.load_control()
        return cls(store, in_force, controls)

    # -- queries ------------------------------------------------------------------------
    def of(self, asset_id: str) -> Control | None:
        """What controls ``asset_id`` now (in force or still being released), if anything."""
        return self._controls.get(asset_id)

    def setpoint(self, setpoint_id: str) -> InForce | None:
        return self._in_force.get(setpoint_id)

    def setpoints(self) -> list[InForce]:
        return list(self._in_force.values())

    def holding(self, setpoint_id: str) -> list[Control]:
        """The assets ``setpoint_id`` still controls (not those a newer one took over)."""
        return [
            c
            for c in self._controls.values()
            if c.setpoint_id == setpoint_id and c.releasing is None
        ]

    def releasing(self) -> list[Control]:
        """Assets whose release the device has not confirmed yet (retried)."""
        return [c for c in self._controls.values() if c.releasing is not None]

    def next_end(self) -> datetime | None:
        ends = [f.ends_at for f in self._in_force.values() if f.ends_at is not None]
        return min(ends) if ends else None

    def due(self, now: datetime) -> list[InForce]:
        """Setpoints whose end has come, earliest first."""
        due = [f for f in self._in_force.values() if f.ends_at is not None and f.ends_at <= now]
        return sorted(due, key=lambda f: f.ends_at or now)

    # -- changes --------------------------------------------------------------------------
    async def take(
        self, record: InForce, controls: Sequence[Control], journal: tuple[Ack, float]
    ) -> None:
        """``record`` is applied and controls the assets of ``controls`` from now.

        An older setpoint left with no asset and no end is no longer in force (nothing
        will ever happen to it); one with an end waits for it, to be acknowledged then.
        """
        left = {
            old.setpoint_id
            for c in controls
            if (old := self._controls.get(c.asset_id)) is not None
            and old.setpoint_id != record.setpoint_id
        }
        self._in_force[record.setpoint_id] = record
        for c in controls:
            self._controls[c.asset_id] = c
        drop = [
            sid
            for sid in left
            if (f := self._in_force.get(sid)) is not None
            and f.ends_at is None
            and not any(c.setpoint_id == sid for c in self._controls.values())
        ]
        for sid in drop:
            del self._in_force[sid]
        await self._store.write_control(
            ControlWrite(
                put_in_force=[record],
                drop_in_force=drop,
                put_controls=controls,
                journal=[journal],
            )
        )
        self.changed.set()

    async def end(
        self,
        setpoint_id: str,
        released: Sequence[str],
        failed: Sequence[str],
        cause: ReleaseCause,
        journal: tuple[Ack, float],
    ) -> None:
        """The control of ``setpoint_id`` is over: ``released`` assets are free, ``failed``
        ones wait for their release to be retried."""
        self._in_force.pop(setpoint_id, None)
        free = [a for a in released if self._held_by(a, setpoint_id)]
        for a in free:
            del self._controls[a]
        pending = [
            Control(c.asset_id, c.setpoint_id, c.power_kw, cause)
            for a in failed
            if (c := self._controls.get(a)) is not None and c.setpoint_id == setpoint_id
        ]
        for c in pending:
            self._controls[c.asset_id] = c
        await self._store.write_control(
            ControlWrite(
                drop_in_force=[setpoint_id],
                drop_controls=free,
                put_controls=pending,
                journal=[journal],
            )
        )

    async def settle(self, asset_id: str, setpoint_id: str) -> None:
        """A retried release was confirmed: the asset is free (unless taken over meanwhile)."""
        c = self._controls.get(asset_id)
        if c is None or c.setpoint_id != setpoint_id or c.releasing is None:
            return
        del self._controls[asset_id]
        await self._store.write_control(ControlWrite(drop_controls=[asset_id]))

    async def remember(self, ack: Ack, keep_until: float) -> None:
        """Journal a release that changed no control (e.g. of a setpoint never seen)."""
        await self._store.write_control(ControlWrite(journal=[(ack, keep_until)]))

    def _held_by(self, asset_id: str, setpoint_id: str) -> bool:
        c = self._controls.get(asset_id)
        return c is not None and c.setpoint_id == setpoint_id


__all__ = ["JOURNAL_GRACE_S", "MAX_DURATION_S", "ControlTable", "control_end", "duration_problem"]
