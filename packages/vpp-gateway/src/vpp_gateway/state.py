"""The state directory: one SQLite database (WAL): seq counters, setpoint journal, spool,
and the control in force (which setpoint controls each asset, and until when).

Every database call runs in a worker thread (`asyncio.to_thread`) and is serialized by a
lock; a telemetry tick is one transaction (readings + seq counters + pruning), so the
event loop never waits on the disk and the disk sees one commit per tick. The file's format
is in `state_db`, the spool's reads and writes in `spool`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .model import Ack, Control, InForce, Reading
from .spool import DISK_RESERVE_BYTES, Spool, SpoolStats
from .state_db import DB_NAME, StateDb, cause, decode_ack, dt, encode_ack, transaction, ts


@dataclass(frozen=True, slots=True)
class ControlWrite:
    """One change of the control in force, written in one transaction.

    ``journal``: final acks to remember with it (a release is journaled with the control it
    ends, so a crash cannot leave one without the other).
    """

    put_in_force: Sequence[InForce] = ()
    drop_in_force: Sequence[str] = ()
    put_controls: Sequence[Control] = ()
    drop_controls: Sequence[str] = ()
    journal: Sequence[tuple[Ack, float]] = ()


class StateStore:
    """The gateway's persistent state. Open with `StateStore.open`, close with `close`."""

    def __init__(self, db: StateDb, max_bytes: int) -> None:
        self._db = db
        self._spool = Spool(db, max_bytes)
        self._journal: dict[str, tuple[float, Ack]] = {}
        with db.locked() as c:
            for sid, keep, ack in c.execute("SELECT setpoint_id, keep_until, ack FROM journal"):
                self._journal[sid] = (keep, decode_ack(ack))

    # -- life cycle ---------------------------------------------------------------
    @classmethod
    async def open(cls, state_dir: Path, max_bytes: int) -> StateStore:
        """Create or open the database in ``state_dir``."""
        return await asyncio.to_thread(cls.open_sync, state_dir, max_bytes)

    @classmethod
    def open_sync(cls, state_dir: Path, max_bytes: int) -> StateStore:
        """`open` without the event loop (CLI `status`, tests)."""
        return cls(StateDb.open(state_dir), max_bytes)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        self._db.close()

    @property
    def path(self) -> Path:
        return self._db.path

    # -- spool figures ------------------------------------------------------------
    @property
    def max_bytes(self) -> int:
        return self._spool.max_bytes

    @property
    def depth(self) -> int:
        """Readings waiting to be sent."""
        return self._spool.depth

    @property
    def dropped(self) -> int:
        """Readings dropped unsent to keep the spool's bound, since start."""
        return self._spool.dropped

    @property
    def used_bytes(self) -> int:
        return self._spool.used_bytes

    # -- seq counters and telemetry -------------------------------------------------
    def load_seqs(self) -> dict[str, int]:
        """Last seq handed out per asset (blocking; call at start-up)."""
        return self._spool.load_seqs()

    async def record_tick(
        self, readings: Sequence[Reading], seqs: Mapping[str, int], sent_at: int, prune_before: int
    ) -> SpoolStats:
        """Store one tick in one transaction: readings (sent at ``sent_at``, 0 = not sent),
        the seq counters, and pruning of readings sent before ``prune_before``."""
        return await asyncio.to_thread(
            self._spool.record_tick, readings, seqs, sent_at, prune_before
        )

    async def prepare_replay(self, watermarks: Mapping[str, int]) -> int:
        """After Register: readings sent but above the headend's watermark go back in the queue.

        Readings never sent stay queued whatever the watermark (they cannot be at the
        headend; a duplicate is dropped there silently). Returns the queue depth.
        """
        return await asyncio.to_thread(self._spool.prepare_replay, dict(watermarks))

    async def next_batch(self, limit: int, after_id: int = 0) -> list[tuple[int, Reading]]:
        """The oldest unsent readings (id > ``after_id``), at most ``limit``."""
        return await asyncio.to_thread(self._spool.next_batch, limit, after_id)

    async def mark_sent(self, ids: Sequence[int], sent_at: int) -> None:
        """Readings that went on the wire (replay)."""
        await asyncio.to_thread(self._spool.mark_sent, list(ids), sent_at)

    def spool_snapshot(self) -> list[Reading]:
        """Every reading in the spool, oldest first (blocking; tests and diagnostics)."""
        return self._spool.snapshot()

    # -- setpoint journal -----------------------------------------------------------
    def journal_get(self, setpoint_id: str) -> Ack | None:
        """The final ack of a setpoint already handled, if it is still remembered."""
        entry = self._journal.get(setpoint_id)
        return entry[1] if entry else None

    async def journal_put(self, ack: Ack, keep_until: float) -> None:
        """Remember a setpoint's final ack until ``keep_until`` (epoch seconds)."""
        self._journal[ack.setpoint_id] = (keep_until, ack)
        await asyncio.to_thread(self._journal_put, ack, keep_until)

    def _journal_put(self, ack: Ack, keep_until: float) -> None:
        with self._db.locked() as c:
            c.execute(
                "INSERT OR REPLACE INTO journal (setpoint_id, keep_until, ack) VALUES (?, ?, ?)",
                (ack.setpoint_id, keep_until, encode_ack(ack)),
            )

    async def journal_prune(self, now: float) -> int:
        """Forget setpoints whose keep-until has passed; returns how many."""
        gone = [sid for sid, (keep, _) in self._journal.items() if keep < now]
        for sid in gone:
            del self._journal[sid]
        if gone:
            await asyncio.to_thread(self._journal_prune, now)
        return len(gone)

    def _journal_prune(self, now: float) -> None:
        with self._db.locked() as c:
            c.execute("DELETE FROM journal WHERE keep_until < ?", (now,))

    def journal_keep(self, setpoint_id: str) -> float | None:
        """Until when (epoch seconds) a setpoint's journal entry is kept; None: not there."""
        entry = self._journal.get(setpoint_id)
        return entry[0] if entry else None

    @property
    def journal_size(self) -> int:
        return len(self._journal)

    # -- control in force -----------------------------------------------------------
    def load_control(self) -> tuple[list[InForce], list[Control]]:
        """The setpoints in force and the per-asset control records (blocking; at start-up)."""
        with self._db.locked() as c:
            setpoints = [
                InForce(str(sid), str(asset_id), dt(ends))
                for sid, asset_id, ends in c.execute(
                    "SELECT setpoint_id, asset_id, ends_at FROM in_force"
                )
            ]
            controls = [
                Control(str(asset_id), str(sid), float(kw), cause(releasing))
                for asset_id, sid, kw, releasing in c.execute(
                    "SELECT asset_id, setpoint_id, power_kw, releasing FROM control"
                )
            ]
        return setpoints, controls

    async def write_control(self, change: ControlWrite) -> None:
        """Apply ``change`` (and its journal entries) in one transaction."""
        for ack, keep in change.journal:
            self._journal[ack.setpoint_id] = (keep, ack)
        await asyncio.to_thread(self._write_control, change)

    def _write_control(self, change: ControlWrite) -> None:
        with self._db.locked() as c, transaction(c):
            c.executemany(
                "DELETE FROM in_force WHERE setpoint_id = ?",
                [(sid,) for sid in change.drop_in_force],
            )
            c.executemany(
                "INSERT OR REPLACE INTO in_force (setpoint_id, asset_id, ends_at) VALUES (?, ?, ?)",
                [(f.setpoint_id, f.asset_id, ts(f.ends_at)) for f in change.put_in_force],
            )
            c.executemany(
                "DELETE FROM control WHERE asset_id = ?",
                [(a,) for a in change.drop_controls],
            )
            c.executemany(
                "INSERT OR REPLACE INTO control (asset_id, setpoint_id, power_kw, releasing)"
                " VALUES (?, ?, ?, ?)",
                [
                    (k.asset_id, k.setpoint_id, k.power_kw, k.releasing or "")
                    for k in change.put_controls
                ],
            )
            c.executemany(
                "INSERT OR REPLACE INTO journal (setpoint_id, keep_until, ack) VALUES (?, ?, ?)",
                [(a.setpoint_id, keep, encode_ack(a)) for a, keep in change.journal],
            )

    # -- small values -----------------------------------------------------------------
    def load_meta(self, key: str) -> float | None:
        """A stored number (blocking; at start-up)."""
        with self._db.locked() as c:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    async def put_meta(self, key: str, value: float) -> None:
        await asyncio.to_thread(self._put_meta, key, value)

    def _put_meta(self, key: str, value: float) -> None:
        with self._db.locked() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


__all__ = ["DB_NAME", "DISK_RESERVE_BYTES", "ControlWrite", "SpoolStats", "StateStore"]
