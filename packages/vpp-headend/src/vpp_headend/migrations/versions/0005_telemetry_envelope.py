"""The live operating envelope on ``telemetry`` and ``telemetry_latest`` (DESIGN.md §3a).

Adds ``available_min_kw``, ``available_max_kw``, ``min_stable_kw`` (double precision) and
``setpoint_ends_at`` (timestamptz), all nullable: null is "not reported" (an older
gateway, a device that cannot tell), and every row stored before this revision reads so.

Cheap on a big table: in PostgreSQL, ADD COLUMN that is nullable and has no default only
writes the catalog (no table rewrite, no scan), and on the partitioned ``telemetry`` it
recurses to every partition the same way; partitions created later (``CREATE TABLE ...
PARTITION OF`` in `vpp_headend.db.partitions`) take the parent's columns. Each table is
altered in one statement, so the ACCESS EXCLUSIVE lock is taken once and held for
milliseconds. It still queues behind a long transaction on the table (and every COPY
queues behind it meanwhile): ``lock_timeout`` makes the migration fail fast then, to be
run again, instead of stalling ingest. The downgrade's DROP COLUMN is catalog-only too.

Revision ID: 0005_telemetry_envelope
Revises: 0004_telemetry_ts_brin
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005_telemetry_envelope"
down_revision: str | None = "0004_telemetry_ts_brin"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("telemetry", "telemetry_latest")
_COLUMNS = (
    ("available_min_kw", "double precision"),
    ("available_max_kw", "double precision"),
    ("min_stable_kw", "double precision"),
    ("setpoint_ends_at", "timestamptz"),
)
_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '10s'"  # this migration's transaction only


def upgrade() -> None:
    op.execute(_LOCK_TIMEOUT)
    adds = ", ".join(f"ADD COLUMN {name} {type_}" for name, type_ in _COLUMNS)
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} {adds}")


def downgrade() -> None:
    op.execute(_LOCK_TIMEOUT)
    drops = ", ".join(f"DROP COLUMN {name}" for name, _ in _COLUMNS)
    for table in _TABLES:
        op.execute(f"ALTER TABLE {table} {drops}")
