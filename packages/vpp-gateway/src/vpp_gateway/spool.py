"""The telemetry spool and the seq counters, in the state database (blocking; worker thread).

The spool keeps every reading of the recent past, not only those taken while
disconnected: ``sent`` is the wall-clock second a reading went on the wire (0 = never
sent). Readings already sent are kept for `GatewaySettings.retain_sent_s`, so that those
lost in a half-dead connection can be replayed from the headend's watermark.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .model import Reading
from .state_db import (
    INSERT_READING,
    READING_COLUMNS,
    StateDb,
    reading_of,
    reading_row,
    transaction,
)

#: Free disk space the spool always leaves, whatever its configured size.
DISK_RESERVE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Spool figures after a write: readings waiting, dropped in total, bytes used."""

    depth: int
    dropped: int
    dropped_now: int
    used_bytes: int


class Spool:
    """Readings kept on disk, and the running figures `vpp-gateway status` shows."""

    def __init__(self, db: StateDb, max_bytes: int) -> None:
        self._db = db
        self.max_bytes = max_bytes
        #: Readings dropped unsent to keep the bound, since start.
        self.dropped = 0
        with db.locked() as c:
            #: Readings waiting to be sent.
            self.depth = int(c.execute("SELECT count(*) FROM spool WHERE sent = 0").fetchone()[0])
            self.used_bytes = db.used()

    def load_seqs(self) -> dict[str, int]:
        """Last seq handed out per asset."""
        with self._db.locked() as c:
            return {a: int(s) for a, s in c.execute("SELECT asset_id, seq FROM seqs")}

    # -- telemetry tick ---------------------------------------------------------------
    def record_tick(
        self, readings: Sequence[Reading], seqs: Mapping[str, int], sent_at: int, prune_before: int
    ) -> SpoolStats:
        """Store one tick in one transaction: readings, seq counters, pruning, the bound."""
        rows = [reading_row(r, sent_at) for r in readings]
        with self._db.locked() as c:
            with transaction(c):
                c.executemany(
                    "INSERT OR REPLACE INTO seqs (asset_id, seq) VALUES (?, ?)", list(seqs.items())
                )
                c.executemany(INSERT_READING, rows)
                c.execute("DELETE FROM spool WHERE sent > 0 AND sent < ?", (prune_before,))
                dropped_now = self._enforce_bound(c)
            if sent_at == 0:
                self.depth += len(rows)
            self.depth -= dropped_now
            self.dropped += dropped_now
            self.used_bytes = self._db.used()
            return SpoolStats(self.depth, self.dropped, dropped_now, self.used_bytes)

    def _bound(self, used: int) -> int:
        try:
            free = shutil.disk_usage(self._db.path.parent).free
        except OSError:
            return self.max_bytes
        return max(min(self.max_bytes, used + free - DISK_RESERVE_BYTES), 0)

    def _enforce_bound(self, c: sqlite3.Connection) -> int:
        """Drop readings until the database fits its bound; return how many unsent were dropped.

        Readings already sent (kept only as insurance) go first, oldest first; then the
        oldest readings still waiting to be sent.
        """
        dropped = 0
        used = self._db.used()
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
            if gone <= 0:
                # Nothing sent is left to give up: only now do unsent readings go. (When
                # some sent rows went, measure again first: a tick taken while a replay
                # is under way must not push out readings the headend has never seen.)
                dropped += c.execute(
                    "DELETE FROM spool WHERE id IN"
                    " (SELECT id FROM spool WHERE sent = 0 ORDER BY id LIMIT ?)",
                    (n,),
                ).rowcount
            used = self._db.used()
        return dropped

    # -- replay -----------------------------------------------------------------------
    def prepare_replay(self, watermarks: Mapping[str, int]) -> int:
        """Readings sent but above the headend's watermark go back in the queue; the depth."""
        with self._db.locked() as c:
            with transaction(c):
                again = [
                    (rid,)
                    for rid, asset_id, seq in c.execute(
                        "SELECT id, asset_id, seq FROM spool WHERE sent > 0"
                    )
                    if seq > watermarks.get(asset_id, 0)
                ]
                c.executemany("UPDATE spool SET sent = 0 WHERE id = ?", again)
                c.execute("DELETE FROM spool WHERE sent > 0")
            self.depth += len(again)
            return self.depth

    def next_batch(self, limit: int, after_id: int) -> list[tuple[int, Reading]]:
        """The oldest unsent readings (id > ``after_id``), at most ``limit``."""
        with self._db.locked() as c:
            rows = c.execute(
                f"SELECT {READING_COLUMNS} FROM spool"
                " WHERE sent = 0 AND id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [reading_of(r) for r in rows]

    def mark_sent(self, ids: Sequence[int], sent_at: int) -> None:
        with self._db.locked() as c:
            cur = c.executemany(
                "UPDATE spool SET sent = ? WHERE id = ? AND sent = 0", [(sent_at, i) for i in ids]
            )
            self.depth -= max(cur.rowcount, 0)

    def snapshot(self) -> list[Reading]:
        """Every reading in the spool, oldest first."""
        with self._db.locked() as c:
            rows = c.execute(f"SELECT {READING_COLUMNS} FROM spool ORDER BY id").fetchall()
        return [reading_of(r)[1] for r in rows]
