"""The headend's configuration: one frozen, validated dataclass built once at the entry point.

`Settings.from_env` reads ``VPP_*`` environment variables as fallbacks for anything the
caller (the CLI) does not set explicitly. Nothing reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .db.url import DatabaseUrlError, libpq_url
from .eventloop import LOOPS


class SettingsError(ValueError):
    """A setting is out of range or malformed; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every knob of a headend process. Durations are in seconds."""

    host: str = "127.0.0.1"
    http_port: int = 8000  # 0 = pick a free port (tests)
    grpc_port: int = 50051  # 0 = pick a free port (tests)
    database_url: str | None = None  # libpq URL; None = embedded PostgreSQL in data_dir
    data_dir: Path = Path(".vpp/pgdata")
    auto_enroll: bool = False  # dev only: unknown assets join the registering site
    heartbeat_interval_s: float = 15.0
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 20.0
    register_timeout_s: float = 30.0  # time a new stream gets to send Register
    close_grace_s: float = 1.0  # after SessionClosed, time the gateway gets to end its side
    default_ttl_s: float = 300.0
    max_ttl_s: float = 7 * 86400.0
    # A dispatch's time in force (duration_s, or ends_at from now) is at most this long.
    max_duration_s: float = 7 * 86400.0
    ack_grace_s: float = 30.0  # a `sent` dispatch with no ack expires this long after expires_at
    sweep_interval_s: float = 1.0
    # Dispatch delivery (docs/decisions.md, "Delivered power"): a group is split by live
    # envelopes reported at most this long ago, else by registry limits.
    envelope_max_age_s: float = 15.0
    # delivered_kw: mean measured power in this window after a dispatch applied (two
    # 4 s ticks), computed once delivery_settle_s more has passed (late readings).
    delivery_window_s: float = 8.0
    delivery_settle_s: float = 2.0
    ingest_queue_rows: int = 50_000  # backpressure: receivers wait when this many rows are queued
    ingest_batch_rows: int = 5_000
    # telemetry_latest is a durable copy: REST reads the in-memory latest first. Upserting
    # 100,000 assets costs ~0.3 s of this process's CPU, so not every second.
    latest_flush_interval_s: float = 5.0
    latest_flush_chunk_rows: int = 10_000  # rows per flush transaction (short row locks)
    ingest_linger_s: float = 0.05  # the writer waits this long to fill a small batch
    partition_days_ahead: int = 3
    partition_check_interval_s: float = 3600.0
    retention_days: int = 7
    rollup_interval_s: float = 60.0  # the one-minute rollup job runs this often
    rollup_overlap_s: float = 180.0  # each run re-rolls this far back, for late readings
    rollup_retention_days: int = 400  # `db prune` deletes rollup minutes older than this
    shutdown_grace_s: float = 5.0
    # Garbage collector (vpp_headend.gcwatch): full collections over thousands of streams
    # pause everything for a second or more; these keep them rare and small.
    # young collections on a clock, survivors frozen (left out of later walks): gcwatch.py
    gc_freeze_interval_s: float = 0.1
    gc_young_threshold: int = 10_000  # and when allocations pass this between ticks
    # everything unfrozen and collected: ~2 s at 10,000 gateways (docs/scaling.md)
    gc_full_collect_interval_s: float = 21600.0
    # auto: uvloop where installed (C transports and timers; docs/scaling.md), else asyncio
    event_loop: str = "auto"
    db_pool_size: int = 10  # pooled connections (as many again may overflow)
    db_pool_timeout_s: float = 10.0  # wait for a free one; then REST 503 / gRPC UNAVAILABLE
    admit_concurrency: int = 8  # Registers admitted at once (each a few DB round trips)
    replica: str = "headend-1"  # unique per process when several share one database
    # /metrics: one last-reading series per asset besides the one per site (100,000 assets
    # are 100,000 series per scrape; docs/runbook.md section 5)
    metrics_per_asset: bool = False
    listen_reconnect_s: float = 1.0  # LISTEN/NOTIFY connection: wait before reconnecting
    # -- security (docs/security.md) --------------------------------------------------
    tls_cert: Path | None = None  # the headend's server certificate chain (PEM)
    tls_key: Path | None = None  # its private key
    tls_client_ca: Path | None = None  # CA bundle that site certificates must chain to
    insecure: bool = False  # allow plaintext gRPC on a non-loopback address (warned)
    rest_auth: str = "auto"  # auto: tokens required once one exists; required: always
    token_cache_s: float = 2.0  # a token's lookup is reused this long (a revoked one works)
    max_message_bytes: int = 4 * 1024 * 1024  # one gRPC message from a gateway
    max_assets_per_register: int = 1_000
    max_readings_per_message: int = 10_000
    # -- live events: GET /events (docs/decisions.md, "Live events (/events)") -----------
    events_interval_s: float = 1.0  # the feed reads what changed this often, while subscribed
    events_client_queue: int = 256  # messages waiting per client at most; more are dropped
    events_keepalive_s: float = 15.0  # a comment line this often on a quiet stream (proxies)
    events_stall_s: float = 30.0  # a client whose queue stays full this long is dropped

    @property
    def tls(self) -> bool:
        """True when gRPC is served with mutual TLS."""
        return self.tls_cert is not None

    @property
    def loopback(self) -> bool:
        """True when the bind address is a loopback address."""
        return is_loopback(self.host)

    def __post_init__(self) -> None:
        problems: list[str] = []
        tls_files = (self.tls_cert, self.tls_key, self.tls_client_ca)
        if any(tls_files) and not all(tls_files):
            problems.append(
                "tls_cert, tls_key and tls_client_ca: give all three (mutual TLS) or none"
            )
        if not any(tls_files) and not self.insecure and not is_loopback(self.host):
            problems.append(
                f"host: plaintext gRPC on {self.host} (not loopback) needs --insecure; "
                "configure --tls-cert/--tls-key/--tls-client-ca instead"
            )
        if self.event_loop not in LOOPS:
            problems.append(
                f"event_loop: must be one of {', '.join(LOOPS)}, not {self.event_loop!r}"
            )
        if self.rest_auth not in ("auto", "required"):
            problems.append(f"rest_auth: must be 'auto' or 'required', not {self.rest_auth!r}")
        for name in ("max_message_bytes", "max_assets_per_register", "max_readings_per_message"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be at least 1")
        for name in ("http_port", "grpc_port"):
            port = getattr(self, name)
            if not 0 <= port < 65536:
                problems.append(f"{name}: {port} is not a TCP port (0-65535)")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_s") and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                problems.append(f"{f.name}: must be a positive number of seconds, not {value!r}")
        for name in (
            "ingest_queue_rows",
            "ingest_batch_rows",
            "latest_flush_chunk_rows",
            "retention_days",
            "rollup_retention_days",
            "admit_concurrency",
            "gc_young_threshold",
            "db_pool_size",
            "events_client_queue",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be at least 1")
        if self.partition_days_ahead < 0:
            problems.append("partition_days_ahead: must be >= 0")
        if self.ingest_batch_rows > self.ingest_queue_rows:
            problems.append("ingest_batch_rows: must not exceed ingest_queue_rows")
        if self.database_url is not None:
            try:
                libpq_url(self.database_url)
            except DatabaseUrlError as exc:
                problems.append(f"database_url: {exc}")
        if problems:
            raise SettingsError("; ".join(problems))

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **explicit: Any) -> Settings:
        """Settings from ``explicit`` values, else ``VPP_<NAME>`` variables, else defaults.

        ``explicit`` values that are None count as not given.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            given = explicit.get(f.name)
            if given is not None:
                values[f.name] = given
                continue
            raw = env.get(f"VPP_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, str(f.type), raw)
        unknown = set(explicit) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**values)


def _parse(name: str, type_name: str, raw: str) -> Any:
    """Parse one environment variable by the field's declared type."""
    try:
        if type_name == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name in ("Path", "Path | None"):
            return Path(raw)
    except ValueError:
        raise SettingsError(f"VPP_{name.upper()}: cannot parse {raw!r} as {type_name}") from None
    return raw


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


__all__ = ["Settings", "SettingsError", "is_loopback"]
