"""The database schema as SQLAlchemy Core tables (DESIGN.md §6).

The tables mirror the migrations (``0001_initial`` and later); queries are built from
them. Telemetry history is range-partitioned by day (`vpp_headend.db.partitions` keeps
partitions ahead); the hot path writes it with binary COPY (`vpp_headend.db.telemetry_repo`),
not through these objects.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    Uuid,
    text,
)

metadata = MetaData()

_now = text("now()")


def _ts(name: str, *, nullable: bool = True, default_now: bool = False) -> Column[object]:
    return Column(
        name,
        DateTime(timezone=True),
        nullable=nullable,
        server_default=_now if default_now else None,
    )


sites = Table(
    "sites",
    metadata,
    Column("site_id", Text, primary_key=True),
    Column("telemetry_interval_s", Double, nullable=True),
    Column("legacy", Boolean, nullable=False, server_default=text("false")),
    _ts("created_at", nullable=False, default_now=True),
    _ts("updated_at", nullable=False, default_now=True),
)

assets = Table(
    "assets",
    metadata,
    Column("asset_id", Text, primary_key=True),
    Column("site_id", Text, ForeignKey("sites.site_id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("capacity_kw", Double, nullable=True),
    Column("min_kw", Double, nullable=True),
    Column("max_kw", Double, nullable=True),
    Column("energy_kwh", Double, nullable=True),
    _ts("created_at", nullable=False, default_now=True),
    _ts("updated_at", nullable=False, default_now=True),
    Column("credential_sha256", Text, nullable=True),  # 0002_security
    Index("ix_assets_site_id", "site_id"),
)

groups = Table(
    "groups",
    metadata,
    Column("group_id", Text, primary_key=True),
    _ts("created_at", nullable=False, default_now=True),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", Text, ForeignKey("groups.group_id", ondelete="CASCADE"), nullable=False),
    Column("site_id", Text, ForeignKey("sites.site_id", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("group_id", "site_id"),
    Index("ix_group_members_site_id", "site_id"),
)

gateway_sessions = Table(
    "gateway_sessions",
    metadata,
    Column("site_id", Text, ForeignKey("sites.site_id", ondelete="CASCADE"), primary_key=True),
    Column("session_id", Uuid, nullable=False),
    Column("epoch", BigInteger, nullable=False),
    Column("connected", Boolean, nullable=False),
    _ts("connected_since"),
    _ts("last_seen"),
    _ts("disconnected_at"),
    Column("disconnect_reason", Text, nullable=True),
    Column("remote", Text, nullable=True),
    Column("agent_version", Text, nullable=True),
    Column("replica", Text, nullable=True),
    Column("assets_served", Text, nullable=False, server_default=text("''")),
)

dispatches = Table(
    "dispatches",
    metadata,
    Column("dispatch_id", Uuid, primary_key=True),
    Column("target_kind", Text, nullable=False),  # asset | site | group
    Column("target_id", Text, nullable=False),
    Column("power_kw", Double, nullable=False),
    Column("state", Text, nullable=False),
    Column("idempotency_key", Text, nullable=True, unique=True),
    Column("request_fingerprint", Text, nullable=True),
    _ts("issued_at", nullable=False),
    _ts("expires_at", nullable=False),
    _ts("updated_at", nullable=False),
    Column("detail", Text, nullable=True),
    # 0006: what the devices took and what telemetry showed they delivered
    Column("allocated_kw", Double, nullable=True),
    Column("shortfall_kw", Double, nullable=True),
    Column("delivered_kw", Double, nullable=True),
    _ts("applied_at"),
    _ts("measured_at"),
    # 0007: time in force as asked (duration_s or ends_at) and the operator's cancel
    Column("duration_s", Double, nullable=True),
    _ts("ends_at"),
    _ts("cancel_requested_at"),
    Column("cancel_reason", Text, nullable=True),
    Index("ix_dispatches_target", "target_kind", "target_id", "issued_at"),
    Index("ix_dispatches_state_issued", "state", "issued_at"),
    Index("ix_dispatches_issued", "issued_at"),
    Index(
        "ix_dispatches_unmeasured",
        "applied_at",
        postgresql_where=text("applied_at IS NOT NULL AND measured_at IS NULL"),
    ),
)

# One row per site a dispatch is delivered to: the unit of delivery (one Setpoint per
# site session), with its own state. An asset target has one; a group one per member.
dispatch_deliveries = Table(
    "dispatch_deliveries",
    metadata,
    Column(
        "dispatch_id",
        Uuid,
        ForeignKey("dispatches.dispatch_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("site_id", Text, nullable=False),
    Column("power_kw", Double, nullable=False),  # this site's share
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _ts("sent_at"),
    _ts("updated_at", nullable=False),
    Column("reason", Text, nullable=True),
    Column("allocated_kw", Double, nullable=True),  # 0006
    Column("shortfall_kw", Double, nullable=True),  # 0006
    _ts("applied_at"),  # 0006
    # 0007: the release of what this site applied (a cancel, its end, the fail-safe)
    _ts("release_requested_at"),
    _ts("release_sent_at"),
    _ts("released_at"),
    Column("release_cause", Text, nullable=True),  # duration_ended | cancelled | failsafe
    _ts("in_force_until"),  # end of control by the gateway's clock (its APPLIED ack)
    PrimaryKeyConstraint("dispatch_id", "site_id"),
    Index("ix_dispatch_deliveries_site_state", "site_id", "state"),
)

dispatch_targets = Table(
    "dispatch_targets",
    metadata,
    Column(
        "dispatch_id",
        Uuid,
        ForeignKey("dispatches.dispatch_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("asset_id", Text, nullable=False),
    Column("site_id", Text, nullable=False),
    Column("allocation_kw", Double, nullable=True),
    Column("state", Text, nullable=False),
    Column("applied_kw", Double, nullable=True),
    Column("clamped", Boolean, nullable=False, server_default=text("false")),
    Column("reason", Text, nullable=True),
    _ts("updated_at", nullable=False),
    Column("limit_reason", Text, nullable=True),  # 0006
    Column("limit_detail", Text, nullable=True),  # 0006
    Column("delivered_kw", Double, nullable=True),  # 0006
    PrimaryKeyConstraint("dispatch_id", "asset_id"),
    Index("ix_dispatch_targets_asset", "asset_id"),
)

dispatch_events = Table(
    "dispatch_events",
    metadata,
    Column("event_id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "dispatch_id",
        Uuid,
        ForeignKey("dispatches.dispatch_id", ondelete="CASCADE"),
        nullable=False,
    ),
    _ts("at", nullable=False),
    Column("state", Text, nullable=False),
    Column("scope", Text, nullable=False),  # dispatch | site | asset
    Column("scope_id", Text, nullable=True),
    Column("detail", Text, nullable=True),
    Index("ix_dispatch_events_dispatch", "dispatch_id", "event_id"),
)


def _envelope_columns() -> list[Column[object]]:
    """The live operating envelope a reading reports (DESIGN.md §3a); null when not sent."""
    return [
        Column("available_min_kw", Double, nullable=True),
        Column("available_max_kw", Double, nullable=True),
        Column("min_stable_kw", Double, nullable=True),
        _ts("setpoint_ends_at"),
    ]


telemetry = Table(
    "telemetry",
    metadata,
    Column("asset_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    _ts("ts", nullable=False),
    _ts("received_at", nullable=False),
    Column("power_kw", Double, nullable=False),
    Column("soc_pct", Double, nullable=True),
    Column("status", SmallInteger, nullable=False),
    Column("setpoint_kw", Double, nullable=True),
    Column("setpoint_id", Text, nullable=True),
    *_envelope_columns(),  # 0005_telemetry_envelope
    Index("ix_telemetry_asset_ts", "asset_id", "ts"),
    Index("ix_telemetry_ts_brin", "ts", postgresql_using="brin"),  # 0004: the rollup's ranges
    postgresql_partition_by="RANGE (ts)",
)

telemetry_latest = Table(
    "telemetry_latest",
    metadata,
    Column("asset_id", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    _ts("ts", nullable=False),
    _ts("received_at", nullable=False),
    Column("power_kw", Double, nullable=False),
    Column("soc_pct", Double, nullable=True),
    Column("status", SmallInteger, nullable=False),
    Column("setpoint_kw", Double, nullable=True),
    Column("setpoint_id", Text, nullable=True),
    *_envelope_columns(),  # 0005_telemetry_envelope
    postgresql_with={"fillfactor": "70"},
)

telemetry_1m = Table(
    "telemetry_1m",
    metadata,
    Column("asset_id", Text, nullable=False),
    _ts("bucket", nullable=False),
    Column("n", Integer, nullable=False),
    Column("min_power_kw", Double, nullable=False),
    Column("avg_power_kw", Double, nullable=False),
    Column("max_power_kw", Double, nullable=False),
    Column("last_soc_pct", Double, nullable=True),
    PrimaryKeyConstraint("asset_id", "bucket"),
    Index("ix_telemetry_1m_bucket", "bucket"),  # 0003_rollup
)

# -- 0002_security ------------------------------------------------------------------------

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", Text, primary_key=True),
    Column("name", Text, nullable=False, server_default=text("''")),
    Column("role", Text, nullable=False),  # operator | viewer
    Column("token_sha256", Text, nullable=False, unique=True),
    _ts("created_at", nullable=False, default_now=True),
    _ts("revoked_at"),
)

revoked_certificates = Table(
    "revoked_certificates",
    metadata,
    Column("fingerprint_sha256", Text, primary_key=True),
    Column("reason", Text, nullable=False, server_default=text("''")),
    _ts("revoked_at", nullable=False, default_now=True),
)


__all__ = [
    "api_tokens",
    "assets",
    "dispatch_deliveries",
    "dispatch_events",
    "dispatch_targets",
    "dispatches",
    "gateway_sessions",
    "group_members",
    "groups",
    "metadata",
    "revoked_certificates",
    "sites",
    "telemetry",
    "telemetry_1m",
    "telemetry_latest",
]
