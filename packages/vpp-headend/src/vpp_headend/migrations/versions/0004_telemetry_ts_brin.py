"""A BRIN index on ``telemetry (ts)``.

The one-minute rollup reads a few minutes of every asset by time; the only index was
``(asset_id, ts)``, which cannot serve a time range across all assets, so PostgreSQL
scanned the whole day's partition every minute: its cost grew with the partition (at
10,000 gateways × 10 assets that is up to 2 billion rows a day). Rows arrive in time
order, so a block-range index is small (tens of kB per million rows) and narrows the
scan to the window's blocks. Created on the partitioned table, it is made on every
partition, present and future; on a large existing history the build reads it once.
``autosummarize`` has autovacuum summarize each block range as it fills (a range not yet
summarized is always read).

Revision ID: 0004_telemetry_ts_brin
Revises: 0003_rollup
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_telemetry_ts_brin"
down_revision: str | None = "0003_rollup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_telemetry_ts_brin ON telemetry USING brin (ts) WITH (autosummarize = on)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_telemetry_ts_brin")
