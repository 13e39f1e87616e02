"""The state directory: one SQLite database (WAL): seq counters, setpoint journal, spool,
and the control in force (which setpoint controls each asset, and until when).

Every database call runs in a worker thread (`asyncio.to_thread`) and is serialized by a
lock; a telemetry tick is one transaction (readings + seq counters + pruning), so the
event loop never waits on the disk and the disk sees one commit per tick.

The spool keeps every reading of the recent past, not only those taken while
disconnected: ``sent`` is the wall-clock second a reading went on the wire (0 = never
sent). Readings already sent are kept for `GatewaySettings.retain_sent_s`, so that those
lost in a half-dead connection can be replayed from the headend's watermark.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from .model import Ack, Control, InForce, Reading, ReleaseCause, Status

DB_NAME = "gateway.sqlite3"
#: Free disk space the spool always leaves, whatever its configured size.
DISK_RESERVE_BYTES = 32 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seqs (asset_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS journal (
    setpoint_id TEXT PRIMARY KEY, keep_until REAL NOT NULL, ack BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, power_kw REAL NOT NULL,
    status TEXT NOT NULL, soc_pct REAL, setpoint_kw REAL, setpoint_id TEXT NOT NULL,
    sent INTEGER NOT NULL, setpoint_ends_at REAL
);
CREATE INDEX IF NOT EXISTS spool_sent ON spool (sent, id);
CREATE TABLE IF NOT EXISTS in_force (
    setpoint_id TEXT PRIMARY KEY, asset_id TEXT NOT NULL, ends_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS control (
    asset_id TEXT PRIMARY KEY, setpoint_id TEXT NOT NULL, power_kw REAL NOT NULL,
    releasing TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID;
"""

_ROW = (
    "id, asset_id, seq, ts, power_kw, status, soc_pct, setpoint_kw, setpoint_id, setpoint_ends_at"
)
#: Columns added after the first release: (table, column, declaration), added on open.
_ADDED_COLUMNS = (("spool", "setpoint_ends_at", "REAL"),)
_ACK = msgspec.json.Decoder(Ack)
_ENC = msgspec.json.Encoder()


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


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _cause(value: object) -> ReleaseCause | None:
    """A stored release cause; an unknown one (a newer gateway's) still means releasing."""
    if not value:
        return None
    try:
        return ReleaseCause(str(value))
    except ValueError:
        return ReleaseCause.DURATION_ENDED


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Spool figures after a write: readings waiting, dropped in total, bytes used."""

    depth: int
    dropped: int
    dropped_now: int
    used_bytes: int


def _reading(row: tuple[Any, ...]) -> tuple[int, Reading]:
    rid, asset_id, seq, ts, power, status, soc, sp_kw, sp_id, sp_ends = row
    return int(rid), Reading(
        asset_id=str(asset_id),
        seq=int(seq),
        ts=datetime.fromtimestamp(float(ts), UTC),
        power_kw=float(power),
        status=Status(str(status)),
        soc_pct=None if soc is None else float(soc),
        setpoint_kw=None if sp_kw is None else float(sp_kw),
        setpoint_id=str(sp_id),
        setpoint_ends_at=_dt(sp_ends),
    )


def _upgrade(conn: sqlite3.Connection) -> None:
    """Add the columns an older state database lacks (tables: CREATE TABLE IF NOT EXISTS)."""
    for table, column, decl in _ADDED_COLUMNS:
        have = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


class StateStore:
    """The gateway's persistent state. Open with `StateStore.open`, close with `close`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, max_bytes: int) -> None:
        self._conn = conn
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._journal: dict[str, tuple[float, Ack]] = {}
        self.depth = 0
        self.dropped = 0
        self.used_bytes = 0
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])

    # -- life cycle ---------------------------------------------------------------
    @classmethod
    async def open(cls, state_dir: Path, max_bytes: int) -> StateStore:
        """Create or open the database in ``state_dir``."""
        return await asyncio.to_thread(cls.open_sync, state_dir, max_bytes)

    @classmethod
    def open_sync(cls, state_dir: Path, max_bytes: int) -> StateStore:
        """`open` without the event loop (CLI `status`, tests)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / DB_NAME
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed tick survives a power cut, so a seq is never handed out twice.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA journal_size_limit=4194304")
        conn.executescript(_SCHEMA)
        _upgrade(conn)
        store = cls(conn, path, max_bytes)
        store.depth = int(conn.execute("SELECT count(*) FROM spool WHERE sent = 0").fetchone()[0])
        store.used_bytes = store._used()
        for sid, keep, ack in conn.execute("SELECT setpoint_id, keep_until, ack FROM journal"):
            store._journal[sid] = (keep, _ACK.decode(ack))
        return store

    async def close(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        with self._lock:
            self._conn.close()

    def _used(self) -> int:
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._page_size)

    # -- seq counters -------------------------------------------------------------
    def load_seqs(self) -> dict[str, int]:
        """Last seq handed out per asset (blocking; call at start-up)."""
        with self._lock:
            return {a: int(s) for a, s in self._conn.execute("SELECT asset_id, seq FROM seqs")}

    # -- telemetry tick -------------------------------------------------------------
    async def record_tick(
        self, readings: Sequence[Reading], seqs: Mapping[str, int], sent_at: int, prune_before: int
    ) -> SpoolStats:
        """Store one tick in one transaction: readings (sent at ``sent_at``, 0 = not sent),
        the seq counters, and pruning of readings sent before ``prune_before``."""
        return await asyncio.to_thread(self._record_tick, readings, seqs, sent_at, prune_before)

    def _record_tick(
        self, readings: Sequence[Reading], seqs: Mapping[str, int], sent_at: int, prune_before: int
    ) -> SpoolStats:
        rows = [
            (
                r.asset_id,
                r.seq,
                r.ts.timestamp(),
                r.power_kw,
                r.status.value,
                r.soc_pct,
                r.setpoint_kw,
                r.setpoint_id,
                sent_at,
                _ts(r.setpoint_ends_at),
            )
            for r in readings
        ]
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(
                    "INSERT OR REPLACE INTO seqs (asset_id, seq) VALUES (?, ?)", list(seqs.items())
                )
                c.executemany(
                    "INSERT INTO spool (asset_id, seq, ts, power_kw, status, soc_pct, setpoint_kw,"
                    " setpoint_id, sent, setpoint_ends_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                c.execute("DELETE FROM spool WHERE sent > 0 AND sent < ?", (prune_before,))
                dropped_now = self._enforce_bound()
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            if sent_at == 0:
                self.depth += len(rows)
            self.depth -= dropped_now
            self.dropped += dropped_now
            self.used_bytes = self._used()
            return SpoolStats(self.depth, self.dropped, dropped_now, self.used_bytes)

    def _bound(self, used: int) -> int:
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return self.max_bytes
        return max(min(self.max_bytes, used + free - DISK_RESERVE_BYTES), 0)

    def _enforce_bound(self) -> int:
        """Drop readings until the database fits its bound; return how many unsent were dropped.

        Readings already sent (kept only as insurance) go first, oldest first; then the
        oldest readings still waiting to be sent.
        """
        c = self._conn
        dropped = 0
        used = self._used()
        bound = self._bound(used)
        while used > bound:
            total = int(c.execute("SELECT count(*) FROM spool").fetchone()[0])
            if total == 0:
                break
            # Rows take roughly used/total bytes each; drop a little more than the excess.
            n = max(64, min(total, int((used - bound) / max(used / total, 1.0) * 1.1) + 1))
            gone = c.execute(
                "DELETE FROM spool WHERE id IN"
                " (SELECT id FROM spool WHERE sent > 0 ORDER BY sent, id LIMIT ?)",
                (n,),
            ).rowcount
            if gone < n:
                dropped += c.execute(
                    "DELETE FROM spool WHERE id IN"
                    " (SELECT id FROM spool WHERE sent = 0 ORDER BY id LIMIT ?)",
                    (n - max(gone, 0),),
                ).rowcount
            used = self._used()
        return dropped

    # -- replay -------------------------------------------------------------------
    async def prepare_replay(self, watermarks: Mapping[str, int]) -> int:
        """After Register: readings sent but above the headend's watermark go back in the queue.

        Readings never sent stay queued whatever the watermark (they cannot be at the
        headend; a duplicate is dropped there silently). Returns the queue depth.
        """
        return await asyncio.to_thread(self._prepare_replay, dict(watermarks))

    def _prepare_replay(self, watermarks: dict[str, int]) -> int:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                again = [
                    (rid,)
                    for rid, asset_id, seq in c.execute(
                        "SELECT id, asset_id, seq FROM spool WHERE sent > 0"
                    )
                    if seq > watermarks.get(asset_id, 0)
                ]
                c.executemany("UPDATE spool SET sent = 0 WHERE id = ?", again)
                c.execute("DELETE FROM spool WHERE sent > 0")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self.depth += len(again)
            return self.depth

    async def next_batch(self, limit: int, after_id: int = 0) -> list[tuple[int, Reading]]:
        """The oldest unsent readings (id > ``after_id``), at most ``limit``."""
        return await asyncio.to_thread(self._next_batch, limit, after_id)

    def _next_batch(self, limit: int, after_id: int) -> list[tuple[int, Reading]]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ROW} FROM spool WHERE sent = 0 AND id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [_reading(r) for r in rows]

    async def mark_sent(self, ids: Sequence[int], sent_at: int) -> None:
        """Readings that went on the wire (replay)."""
        await asyncio.to_thread(self._mark_sent, list(ids), sent_at)

    def _mark_sent(self, ids: list[int], sent_at: int) -> None:
        with self._lock:
            cur = self._conn.executemany(
                "UPDATE spool SET sent = ? WHERE id = ? AND sent = 0", [(sent_at, i) for i in ids]
            )
            self.depth -= max(cur.rowcount, 0)

    def spool_snapshot(self) -> list[Reading]:
        """Every reading in the spool, oldest first (blocking; tests and diagnostics)."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_ROW} FROM spool ORDER BY id").fetchall()
        return [_reading(r)[1] for r in rows]

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
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO journal (setpoint_id, keep_until, ack) VALUES (?, ?, ?)",
                (ack.setpoint_id, keep_until, _ENC.encode(ack)),
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
        with self._lock:
            self._conn.execute("DELETE FROM journal WHERE keep_until < ?", (now,))

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
        with self._lock:
            c = self._conn
            setpoints = [
                InForce(str(sid), str(asset_id), _dt(ends))
                for sid, asset_id, ends in c.execute(
                    "SELECT setpoint_id, asset_id, ends_at FROM in_force"
                )
            ]
            controls = [
                Control(str(asset_id), str(sid), float(kw), _cause(releasing))
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
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(
                    "DELETE FROM in_force WHERE setpoint_id = ?",
                    [(sid,) for sid in change.drop_in_force],
                )
                c.executemany(
                    "INSERT OR REPLACE INTO in_force (setpoint_id, asset_id, ends_at)"
                    " VALUES (?, ?, ?)",
                    [(f.setpoint_id, f.asset_id, _ts(f.ends_at)) for f in change.put_in_force],
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
                    "INSERT OR REPLACE INTO journal (setpoint_id, keep_until, ack)"
                    " VALUES (?, ?, ?)",
                    [(a.setpoint_id, keep, _ENC.encode(a)) for a, keep in change.journal],
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    # -- small values -----------------------------------------------------------------
    def load_meta(self, key: str) -> float | None:
        """A stored number (blocking; at start-up)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    async def put_meta(self, key: str, value: float) -> None:
        await asyncio.to_thread(self._put_meta, key, value)

    def _put_meta(self, key: str, value: float) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )
