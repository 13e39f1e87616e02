"""Initial schema: registry, sessions, dispatch lifecycle, telemetry (DESIGN.md §6).

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UP = [
    """
    CREATE TABLE sites (
        site_id text PRIMARY KEY,
        telemetry_interval_s double precision,
        legacy boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE assets (
        asset_id text PRIMARY KEY,
        site_id text NOT NULL REFERENCES sites (site_id) ON DELETE CASCADE,
        kind text NOT NULL,
        capacity_kw double precision,
        min_kw double precision,
        max_kw double precision,
        energy_kwh double precision,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX ix_assets_site_id ON assets (site_id)",
    """
    CREATE TABLE groups (
        group_id text PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE group_members (
        group_id text NOT NULL REFERENCES groups (group_id) ON DELETE CASCADE,
        site_id text NOT NULL REFERENCES sites (site_id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, site_id)
    )
    """,
    "CREATE INDEX ix_group_members_site_id ON group_members (site_id)",
    """
    CREATE TABLE gateway_sessions (
        site_id text PRIMARY KEY REFERENCES sites (site_id) ON DELETE CASCADE,
        session_id uuid NOT NULL,
        epoch bigint NOT NULL,
        connected boolean NOT NULL,
        connected_since timestamptz,
        last_seen timestamptz,
        disconnected_at timestamptz,
        disconnect_reason text,
        remote text,
        agent_version text,
        replica text,
        assets_served text NOT NULL DEFAULT ''
    )
    """,
    """
    CREATE TABLE dispatches (
        dispatch_id uuid PRIMARY KEY,
        target_kind text NOT NULL CHECK (target_kind IN ('asset', 'site', 'group')),
        target_id text NOT NULL,
        power_kw double precision NOT NULL,
        state text NOT NULL,
        idempotency_key text UNIQUE,
        request_fingerprint text,
        issued_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        detail text
    )
    """,
    "CREATE INDEX ix_dispatches_target ON dispatches (target_kind, target_id, issued_at)",
    "CREATE INDEX ix_dispatches_state_issued ON dispatches (state, issued_at)",
    "CREATE INDEX ix_dispatches_issued ON dispatches (issued_at)",
    """
    CREATE TABLE dispatch_deliveries (
        dispatch_id uuid NOT NULL REFERENCES dispatches (dispatch_id) ON DELETE CASCADE,
        site_id text NOT NULL,
        power_kw double precision NOT NULL,
        state text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        sent_at timestamptz,
        updated_at timestamptz NOT NULL,
        reason text,
        PRIMARY KEY (dispatch_id, site_id)
    )
    """,
    "CREATE INDEX ix_dispatch_deliveries_site_state ON dispatch_deliveries (site_id, state)",
    # The expiry sweeper and reconnect delivery look only at deliveries still in flight.
    "CREATE INDEX ix_dispatch_deliveries_open ON dispatch_deliveries (dispatch_id) "
    "WHERE state IN ('pending', 'sent', 'received')",
    """
    CREATE TABLE dispatch_targets (
        dispatch_id uuid NOT NULL REFERENCES dispatches (dispatch_id) ON DELETE CASCADE,
        asset_id text NOT NULL,
        site_id text NOT NULL,
        allocation_kw double precision,
        state text NOT NULL,
        applied_kw double precision,
        clamped boolean NOT NULL DEFAULT false,
        reason text,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (dispatch_id, asset_id)
    )
    """,
    "CREATE INDEX ix_dispatch_targets_asset ON dispatch_targets (asset_id)",
    """
    CREATE TABLE dispatch_events (
        event_id bigserial PRIMARY KEY,
        dispatch_id uuid NOT NULL REFERENCES dispatches (dispatch_id) ON DELETE CASCADE,
        at timestamptz NOT NULL,
        state text NOT NULL,
        scope text NOT NULL,
        scope_id text,
        detail text
    )
    """,
    "CREATE INDEX ix_dispatch_events_dispatch ON dispatch_events (dispatch_id, event_id)",
    # History: partitioned by day on ts. No primary key: (asset_id, seq) duplicates are
    # dropped in memory by the headend, so no unique index has to span partitions.
    """
    CREATE TABLE telemetry (
        asset_id text NOT NULL,
        seq bigint NOT NULL,
        ts timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        power_kw double precision NOT NULL,
        soc_pct double precision,
        status smallint NOT NULL,
        setpoint_kw double precision,
        setpoint_id text
    ) PARTITION BY RANGE (ts)
    """,
    "CREATE INDEX ix_telemetry_asset_ts ON telemetry (asset_id, ts)",
    # Readings outside every daily partition land here, so none is ever refused.
    "CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT",
    """
    CREATE TABLE telemetry_latest (
        asset_id text PRIMARY KEY,
        seq bigint NOT NULL,
        ts timestamptz NOT NULL,
        received_at timestamptz NOT NULL,
        power_kw double precision NOT NULL,
        soc_pct double precision,
        status smallint NOT NULL,
        setpoint_kw double precision,
        setpoint_id text
    ) WITH (fillfactor = 70)
    """,
    """
    CREATE TABLE telemetry_1m (
        asset_id text NOT NULL,
        bucket timestamptz NOT NULL,
        n integer NOT NULL,
        min_power_kw double precision NOT NULL,
        avg_power_kw double precision NOT NULL,
        max_power_kw double precision NOT NULL,
        last_soc_pct double precision,
        PRIMARY KEY (asset_id, bucket)
    )
    """,
]

_DOWN = [
    "DROP TABLE IF EXISTS telemetry_1m",
    "DROP TABLE IF EXISTS telemetry_latest",
    "DROP TABLE IF EXISTS telemetry CASCADE",
    "DROP TABLE IF EXISTS dispatch_events",
    "DROP TABLE IF EXISTS dispatch_targets",
    "DROP TABLE IF EXISTS dispatch_deliveries",
    "DROP TABLE IF EXISTS dispatches",
    "DROP TABLE IF EXISTS gateway_sessions",
    "DROP TABLE IF EXISTS group_members",
    "DROP TABLE IF EXISTS groups",
    "DROP TABLE IF EXISTS assets",
    "DROP TABLE IF EXISTS sites",
]


def upgrade() -> None:
    for statement in _UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in _DOWN:
        op.execute(statement)
