"""Rollups: an index on ``telemetry_1m (bucket)``.

The primary key ``(asset_id, bucket)`` cannot answer ``max(bucket)`` (the rollup job's
high-water mark) or ``bucket < cutoff`` (retention) without reading the whole table,
which holds one row per asset and minute for 400 days.

Revision ID: 0003_rollup
Revises: 0002_security
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003_rollup"
down_revision: str | None = "0002_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_telemetry_1m_bucket ON telemetry_1m (bucket)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_telemetry_1m_bucket")
