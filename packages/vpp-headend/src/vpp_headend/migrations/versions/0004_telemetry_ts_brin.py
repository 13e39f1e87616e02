"""A BRIN index on ``telemetry (ts)``.

The one-minute rollup reads a few minutes of every asset by time; the only index was
``(asset_id, ts)``, which cannot serve a time range across all assets, so PostgreSQL
scanned the whole day's partition every minute: its cost grew with the partition (at
10,000 gateways × 10 assets that is up to 2 billion rows a day). Rows arrive in time
order, so a block-range index is small (tens of kB per million rows) and narrows the
scan to the window's blocks. A range not yet summarized is always read: the rollup job
summarizes new ranges itself before each run (``rollup.summarize_new_ranges``).
``autosummarize`` is left off: under heavy ingest autovacuum's request queue overflows
and PostgreSQL logs every dropped request.

Online: a plain CREATE INDEX on the partitioned table would block every COPY for as long
as it reads the whole history. So the parent's index is made ``ON ONLY`` (no partition
yet), each existing partition's index ``CONCURRENTLY`` (inserts go on; outside a
transaction), then attached, which makes the parent's index valid; partitions created
later get theirs with the partition.

Revision ID: 0004_telemetry_ts_brin
Revises: 0003_rollup
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_telemetry_ts_brin"
down_revision: str | None = "0003_rollup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WITH = "USING brin (ts)"


def upgrade() -> None:
    partitions = [
        str(name)
        for (name,) in op.get_bind().execute(
            sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'telemetry'::regclass ORDER BY c.relname"
            )
        )
    ]
    op.execute(f"CREATE INDEX ix_telemetry_ts_brin ON ONLY telemetry {_WITH}")
    with op.get_context().autocommit_block():
        for name in partitions:
            op.execute(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}_ts_brin" ON "{name}" {_WITH}'
            )
    for name in partitions:
        op.execute(f'ALTER INDEX ix_telemetry_ts_brin ATTACH PARTITION "{name}_ts_brin"')


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_telemetry_ts_brin")
