"""Ending control (DESIGN.md §3b): at a setpoint's end, on the headend's Release, by the
fail-safe, and after a restart. Every end is one ack RELEASED, journaled with it.

The ack of a release: ``release_cause`` says why; ``allocations`` are the assets released
now, each with the power the setpoint held it at (``power_kw``) and its ``fallback_kw`` as
the device set it (``applied_kw``; unset when it went back to its own behaviour). No
allocations: nothing was under that setpoint's control any more, and ``reason`` says why.

A device that does not confirm its release keeps its control record, marked releasing:
the release is retried every tick until the device confirms it or a newer setpoint takes
the asset over. The ack (sent once) shows it in that allocation's limit and detail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime

from .control import JOURNAL_GRACE_S
from .delivery import command
from .failsafe import LAST_HEARD_KEY, PERSIST_EVERY_S, FailSafe
from .model import (
    Ack,
    AckState,
    Allocation,
    Limited,
    ReleaseCause,
    ReleaseCommand,
)
from .parts import ControlParts
from .release import Released, release_asset

#: What the fail-safe counts silence from: (monotonic time of the last message heard on a
#: registered session or None, how many were heard in all).
Heard = Callable[[], tuple[float | None, int]]

NOTHING_HELD = "superseded on every asset: nothing to release"


def _failed(limit: Limited | None) -> Limited | None:
    if limit is None:
        return None
    return Limited(limit.reason, f"release failed: {limit.detail}; retried every tick")


class Releaser:
    """Ends the control of setpoints and watches the fail-safe; `run` is its loop."""

    def __init__(
        self, parts: ControlParts, heard: Heard, *, last_heard: float | None = None
    ) -> None:
        """``last_heard``: when (epoch seconds) a previous run last heard the headend."""
        self._settings = parts.settings
        self._fleet = parts.fleet
        self._store = parts.store
        self._control = parts.control
        self._clock = parts.clock
        self._emit = parts.emit
        self._heard = heard
        self._log = parts.log
        silent = 0.0 if last_heard is None else self._clock.now().timestamp() - last_heard
        self.failsafe = FailSafe(self._settings.failsafe_after_s, self._clock.monotonic(), silent)
        self._persisted: float | None = None
        self._last_retry = float("-inf")
        #: Checks done (ends, retries, fail-safe): a barrier for tests.
        self.checks = 0

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled: check at every end, and at least once a tick (or a second)."""
        while True:
            self._control.changed.clear()
            try:
                await self.check()
            except Exception as exc:  # a bad check must not end the fail-safe for good
                self._log.error("control_check_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self._poll_s)
                continue
            await self._sleep()

    @property
    def _poll_s(self) -> float:
        return min(self._settings.tick_s, 1.0)

    async def _sleep(self) -> None:
        delay = self._poll_s
        end = self._control.next_end()
        if end is not None:
            delay = min(delay, max((end - self._clock.now()).total_seconds(), 0.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._control.changed.wait()

    async def check(self) -> None:
        """End what is due, retry unconfirmed releases, trip or re-arm the fail-safe."""
        async with self._control.lock:
            for f in self._control.due(self._clock.now()):
                await self._end(f.setpoint_id, ReleaseCause.DURATION_ENDED, "duration ended")
            loop = asyncio.get_running_loop()
            if loop.time() - self._last_retry >= self._settings.tick_s:
                self._last_retry = loop.time()
                await self._retry()
        await self._watch()
        self.checks += 1

    # -- start-up -------------------------------------------------------------------------
    async def recover(self) -> None:
        """Before connecting: end what ended while the gateway was down, fail safe if it was
        cut off too long, and re-apply the rest to the devices for the time it has left."""
        async with self._control.lock:
            for f in self._control.due(self._clock.now()):
                await self._end(
                    f.setpoint_id,
                    ReleaseCause.DURATION_ENDED,
                    "duration ended while the gateway was down",
                )
            heard_at, count = self._heard()
            mono = self._clock.monotonic()
            if self.failsafe.due(heard_at, mono):
                await self._trip(self.failsafe.silent_s(heard_at, mono), count, at_start=True)
            await self._restore()

    async def _restore(self) -> None:
        now = self._clock.now()
        for f in self._control.setpoints():
            held = [
                (c, a)
                for c in self._control.holding(f.setpoint_id)
                if (a := self._fleet.get(c.asset_id)) is not None
            ]
            outcomes = await asyncio.gather(
                *(command(a, c.power_kw, self._settings.device_timeout) for c, a in held)
            )
            restored, failed = [], []
            for (_, a), out in zip(held, outcomes, strict=True):
                if out.applied_kw is None:
                    failed.append(f"{a.asset_id}: {out.limit.detail if out.limit else '?'}")
                    continue
                a.note_applied(out.applied_kw, f.setpoint_id, now, f.ends_at)
                restored.append(a.asset_id)
            if not held:
                continue
            self._log.info(
                "control_restored",
                setpoint_id=f.setpoint_id,
                assets=",".join(restored) or None,
                ends_at=f.ends_at,
                left_s=(f.ends_at - now).total_seconds() if f.ends_at else None,
            )
            if failed:
                self._log.warning(
                    "control_restore_failed",
                    setpoint_id=f.setpoint_id,
                    failed="; ".join(failed),
                    note="still under its control: released at its end, on release or by "
                    "the fail-safe",
                )

    # -- the headend's Release ---------------------------------------------------------------
    async def cancel(self, cmd: ReleaseCommand) -> Ack:
        """Release exactly what ``cmd.setpoint_id`` still controls; idempotent."""
        now = self._clock.now()
        sid = cmd.setpoint_id
        if not sid:
            ack = Ack("", AckState.REJECTED, now, reason="release has no setpoint_id")
            self._log.warning("release_rejected", reason=ack.reason)
            self._emit(ack)
            return ack
        async with self._control.lock:
            if self._control.setpoint(sid) is not None:
                return await self._end(
                    sid, ReleaseCause.CANCELLED, cmd.reason or "released by the headend"
                )
            return await self._not_in_force(cmd, now)

    async def _not_in_force(self, cmd: ReleaseCommand, now: datetime) -> Ack:
        sid = cmd.setpoint_id
        prior = self._store.journal_get(sid)
        if prior is None:
            why = "never applied here (unknown setpoint id): it will not be applied if it arrives"
        elif prior.state is AckState.RELEASED:
            cause = prior.release_cause.value if prior.release_cause else "released"
            why = f"already released ({cause})"
        elif prior.state is AckState.APPLIED:
            why = "superseded on every asset"
        else:
            why = f"never applied ({prior.state.value})"
        ack = Ack(
            sid,
            AckState.RELEASED,
            now,
            asset_id=prior.asset_id if prior else "",
            reason=f"not in force: {why}",
            release_cause=ReleaseCause.CANCELLED,
        )
        # Journaled where a later delivery must be answered RELEASED and never applied.
        if prior is None or prior.state is AckState.APPLIED:
            await self._control.remember(ack, self._keep(sid, now))
        self._log.info(
            "setpoint_released",
            setpoint_id=sid,
            cause=ReleaseCause.CANCELLED.value,
            assets=None,
            reason=ack.reason,
        )
        self._emit(ack)
        return ack

    # -- ending one setpoint (the lock is held) -------------------------------------------------
    def _keep(self, setpoint_id: str, now: datetime) -> float:
        prior = self._store.journal_keep(setpoint_id)
        fresh = now.timestamp() + (
            JOURNAL_GRACE_S if prior is not None else self._settings.journal_retention_s
        )
        return max(prior or 0.0, fresh)

    async def _end(self, setpoint_id: str, cause: ReleaseCause, reason: str) -> Ack:
        f = self._control.setpoint(setpoint_id)
        held = self._control.holding(setpoint_id)
        known = [(c, a) for c in held if (a := self._fleet.get(c.asset_id)) is not None]
        results: Sequence[Released] = await asyncio.gather(
            *(release_asset(a, self._settings.device_timeout) for _, a in known)
        )
        now = self._clock.now()
        allocations: list[Allocation] = []
        ok = [c.asset_id for c in held if self._fleet.get(c.asset_id) is None]
        failed: list[str] = []
        for (c, a), r in zip(known, results, strict=True):
            allocations.append(Allocation(a.asset_id, c.power_kw, r.applied_kw, _failed(r.limit)))
            if r.ok:
                a.note_released()
                ok.append(a.asset_id)
            else:
                failed.append(a.asset_id)
        notes = [reason if held else f"{reason}; {NOTHING_HELD}"]
        notes += [f"{x.asset_id}: {x.limit.detail}" for x in allocations if x.limit is not None]
        ack = Ack(
            setpoint_id,
            AckState.RELEASED,
            now,
            asset_id=f.asset_id if f else "",
            reason="; ".join(notes),
            allocations=tuple(allocations),
            release_cause=cause,
        )
        await self._control.end(setpoint_id, ok, failed, cause, (ack, self._keep(setpoint_id, now)))
        self._log.info(
            "setpoint_released",
            setpoint_id=setpoint_id,
            cause=cause.value,
            assets=",".join(a for a in ok if self._fleet.get(a)) or None,
            failed=",".join(failed) or None,
            reason=ack.reason,
        )
        if failed:
            self._log.warning(
                "release_failed",
                setpoint_id=setpoint_id,
                assets=",".join(failed),
                note="retried every tick until the device confirms",
            )
        self._emit(ack)
        return ack

    async def _retry(self) -> None:
        pending = [(c, a) for c in self._control.releasing() if (a := self._fleet.get(c.asset_id))]
        if not pending:
            return
        results = await asyncio.gather(
            *(release_asset(a, self._settings.device_timeout) for _, a in pending)
        )
        for (c, a), r in zip(pending, results, strict=True):
            if not r.ok:
                continue
            if a.setpoint_id == c.setpoint_id:
                a.note_released()
            await self._control.settle(c.asset_id, c.setpoint_id)
            self._log.info(
                "release_confirmed",
                asset_id=c.asset_id,
                setpoint_id=c.setpoint_id,
                cause=c.releasing.value if c.releasing else None,
            )

    # -- the fail-safe ----------------------------------------------------------------------
    async def _watch(self) -> None:
        heard_at, count = self._heard()
        mono = self._clock.monotonic()
        if self.failsafe.rearm(count):
            self._log.info("failsafe_rearmed", after_s=self.failsafe.after_s)
        if self.failsafe.due(heard_at, mono):
            async with self._control.lock:
                await self._trip(self.failsafe.silent_s(heard_at, mono), count)
        if heard_at is not None and (
            self._persisted is None or heard_at - self._persisted >= PERSIST_EVERY_S
        ):
            self._persisted = heard_at
            wall = self._clock.now().timestamp() - (mono - heard_at)
            await self._store.put_meta(LAST_HEARD_KEY, wall)

    async def _trip(self, silent_s: float, heard_count: int, *, at_start: bool = False) -> None:
        self.failsafe.trip(self._clock.monotonic(), heard_count)
        reason = (
            f"fail-safe: no working session with the headend for {silent_s:.0f} s "
            f"(failsafe_after_s {self.failsafe.after_s:g})"
        )
        setpoints = [
            f.setpoint_id for f in self._control.setpoints() if self._control.holding(f.setpoint_id)
        ]
        assets: list[str] = []
        for sid in setpoints:
            ack = await self._end(sid, ReleaseCause.FAILSAFE, reason)
            assets += [a.asset_id for a in ack.allocations]
        self._log.warning(
            "failsafe",
            silent_s=silent_s,
            after_s=self.failsafe.after_s,
            assets=",".join(assets) or None,
            setpoints=",".join(setpoints) or None,
            at_start=at_start or None,
            note="every asset under control released to its fallback"
            if setpoints
            else "nothing was under control",
        )

    def snapshot(self) -> dict[str, object]:
        """The fail-safe's state for `vpp-gateway status`."""
        heard_at, _ = self._heard()
        return {
            "after_s": self.failsafe.after_s,
            "tripped": self.failsafe.tripped_at is not None,
            "silent_s": round(self.failsafe.silent_s(heard_at, self._clock.monotonic()), 1),
        }


__all__ = ["NOTHING_HELD", "Heard", "Releaser"]
