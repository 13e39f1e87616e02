"""A setpoint's time in force (DESIGN.md §3b): duration, end, cancel and release.

``dispatches``: ``duration_s`` (double precision) or ``ends_at`` (timestamptz), the time
in force as the operator asked for it; ``cancel_requested_at`` (timestamptz) and
``cancel_reason`` (text), set by ``POST /dispatch/{id}/cancel``.
``dispatch_deliveries``: ``release_requested_at`` (a cancel asked this site to release),
``release_sent_at`` (the last Release put on a stream), ``released_at`` (when the
gateway released), ``release_cause`` (text: duration_ended, cancelled, failsafe) and
``in_force_until`` (the end of control by the gateway's clock, from its APPLIED ack).

All nullable with no default: catalog-only changes (no rewrite, no scan), one ALTER per
table so its lock is taken once, briefly; ``lock_timeout`` makes the migration fail fast
(to be run again) rather than queue every dispatch behind a long transaction. Rows
stored before read as "no end, never cancelled". A gateway's cancelling deliveries are
found through the existing ``ix_dispatch_deliveries_site_state``: no new index.

Revision ID: 0007_dispatch_time_in_force
Revises: 0006_dispatch_delivery
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007_dispatch_time_in_force"
down_revision: str | None = "0006_dispatch_delivery"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S, _TS, _TEXT = "double precision", "timestamptz", "text"
_COLUMNS = {
    "dispatches": (
        ("duration_s", _S),
        ("ends_at", _TS),
        ("cancel_requested_at", _TS),
        ("cancel_reason", _TEXT),
    ),
    "dispatch_deliveries": (
        ("release_requested_at", _TS),
        ("release_sent_at", _TS),
        ("released_at", _TS),
        ("release_cause", _TEXT),
        ("in_force_until", _TS),
    ),
}
_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '10s'"  # this migration's transaction only


def upgrade() -> None:
    op.execute(_LOCK_TIMEOUT)
    for table, cols in _COLUMNS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ADD COLUMN {c} {t}" for c, t in cols))


def downgrade() -> None:
    op.execute(_LOCK_TIMEOUT)
    for table, cols in _COLUMNS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"DROP COLUMN {c}" for c, _ in cols))
