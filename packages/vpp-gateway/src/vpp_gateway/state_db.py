"""The state database on disk: its schema, the upgrade of older files, how values are stored
in its rows, and serialized access (one lock; a transaction is all or nothing)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from .model import Ack, Reading, ReleaseCause, Status

DB_NAME = "gateway.sqlite3"

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

#: The spool columns a `Reading` is read back from (`reading_of`).
READING_COLUMNS = (
    "id, asset_id, seq, ts, power_kw, status, soc_pct, setpoint_kw, setpoint_id, setpoint_ends_at"
)
#: Columns added after the first release: (table, column, declaration), added on open.
_ADDED_COLUMNS = (("spool", "setpoint_ends_at", "REAL"),)
_ACK = msgspec.json.Decoder(Ack)
_ENC = msgspec.json.Encoder()


# -- values in rows ---------------------------------------------------------------------
def ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def cause(value: object) -> ReleaseCause | None:
    """A stored release cause; an unknown one (a newer gateway's) still means releasing."""
    if not value:
        return None
    try:
        return ReleaseCause(str(value))
    except ValueError:
        return ReleaseCause.DURATION_ENDED


def encode_ack(ack: Ack) -> bytes:
    return _ENC.encode(ack)


def decode_ack(blob: bytes) -> Ack:
    return _ACK.decode(blob)


def reading_row(r: Reading, sent_at: int) -> tuple[Any, ...]:
    """The spool row of ``r``, in the column order of `INSERT_READING`."""
    return (
        r.asset_id,
        r.seq,
        r.ts.timestamp(),
        r.power_kw,
        r.status.value,
        r.soc_pct,
        r.setpoint_kw,
        r.setpoint_id,
        sent_at,
        ts(r.setpoint_ends_at),
    )


INSERT_READING = (
    "INSERT INTO spool (asset_id, seq, ts, power_kw, status, soc_pct, setpoint_kw,"
    " setpoint_id, sent, setpoint_ends_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def reading_of(row: tuple[Any, ...]) -> tuple[int, Reading]:
    """A row of `READING_COLUMNS`: (spool id, reading)."""
    rid, asset_id, seq, ts_, power, status, soc, sp_kw, sp_id, sp_ends = row
    return int(rid), Reading(
        asset_id=str(asset_id),
        seq=int(seq),
        ts=datetime.fromtimestamp(float(ts_), UTC),
        power_kw=float(power),
        status=Status(str(status)),
        soc_pct=None if soc is None else float(soc),
        setpoint_kw=None if sp_kw is None else float(sp_kw),
        setpoint_id=str(sp_id),
        setpoint_ends_at=dt(sp_ends),
    )


# -- the file ---------------------------------------------------------------------------
@contextmanager
def transaction(c: sqlite3.Connection) -> Iterator[None]:
    """One transaction on ``c``: committed at the end of the block, rolled back on error."""
    c.execute("BEGIN IMMEDIATE")
    try:
        yield
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def _upgrade(conn: sqlite3.Connection) -> None:
    """Add the columns an older state database lacks (tables: CREATE TABLE IF NOT EXISTS)."""
    for table, column, decl in _ADDED_COLUMNS:
        have = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


class StateDb:
    """One SQLite connection (WAL) and the lock that serializes every use of it.

    Blocking: the store calls it from a worker thread, never on the event loop.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._lock = threading.Lock()
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])

    @classmethod
    def open(cls, state_dir: Path) -> StateDb:
        """Create or open the database in ``state_dir`` (and upgrade an older one)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / DB_NAME
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed tick survives a power cut, so a seq is never handed out twice.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA journal_size_limit=4194304")
        conn.executescript(_SCHEMA)
        _upgrade(conn)
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, the lock held until the block ends (`transaction` inside it)."""
        with self._lock:
            yield self.conn

    def used(self) -> int:
        """Bytes the database's pages hold (free pages not counted); call with the lock held."""
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._page_size)
