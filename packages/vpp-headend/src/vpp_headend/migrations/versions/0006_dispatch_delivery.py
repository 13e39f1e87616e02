"""What a dispatch delivered (DESIGN.md §3a): allocated, shortfall, delivered power.

``dispatches``: ``allocated_kw``, ``shortfall_kw``, ``delivered_kw`` (double precision),
``applied_at`` and ``measured_at`` (timestamptz). ``dispatch_deliveries``:
``allocated_kw``, ``shortfall_kw``, ``applied_at``. ``dispatch_targets``:
``limit_reason``, ``limit_detail`` (text), ``delivered_kw``. All nullable with no
default: catalog-only changes (no rewrite, no scan), one ALTER per table so its lock is
taken once, briefly; ``lock_timeout`` makes the migration fail fast (to be run again)
rather than queue every dispatch behind a long transaction. Rows stored before read as
"not known" (null) and are never measured.

The measurement job finds applied, unmeasured dispatches through a partial index that
holds only those (small whatever the history); it is built ``CONCURRENTLY`` (outside a
transaction) so dispatches are created meanwhile.

Revision ID: 0006_dispatch_delivery
Revises: 0005_telemetry_envelope
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_dispatch_delivery"
down_revision: str | None = "0005_telemetry_envelope"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KW, _TS, _TEXT = "double precision", "timestamptz", "text"
_COLUMNS = {
    "dispatches": (
        ("allocated_kw", _KW),
        ("shortfall_kw", _KW),
        ("delivered_kw", _KW),
        ("applied_at", _TS),
        ("measured_at", _TS),
    ),
    "dispatch_deliveries": (("allocated_kw", _KW), ("shortfall_kw", _KW), ("applied_at", _TS)),
    "dispatch_targets": (
        ("limit_reason", _TEXT),
        ("limit_detail", _TEXT),
        ("delivered_kw", _KW),
    ),
}
_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '10s'"  # this migration's transaction only
_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_dispatches_unmeasured ON dispatches"
    " (applied_at) WHERE applied_at IS NOT NULL AND measured_at IS NULL"
)


def upgrade() -> None:
    op.execute(_LOCK_TIMEOUT)
    for table, cols in _COLUMNS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ADD COLUMN {c} {t}" for c, t in cols))
    with op.get_context().autocommit_block():
        op.execute(_INDEX)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_dispatches_unmeasured")
    op.execute(_LOCK_TIMEOUT)
    for table, cols in _COLUMNS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"DROP COLUMN {c}" for c, _ in cols))
