"""Prometheus metrics of one headend (its own registry: no process-global state).

Gauges that describe current state (connected gateways, per-asset lag, queue depth) are
computed when scraped from callbacks, so the hot path only bumps counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .clock import Clock, utc_now

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _LagText:
    """``vpp_telemetry_lag_seconds{asset_id}``: now − ts of the latest stored reading.

    Written straight to exposition text, in chunks that give the loop its turn, with each
    asset's escaped series name kept: prometheus-client's generic path stalled the loop
    for a second per scrape at fleet size (docs/scaling.md, "Why the hot path looks as it
    does").
    """

    HEADER = (
        "# HELP vpp_telemetry_lag_seconds Seconds between now and the newest stored reading "
        "of each asset\n# TYPE vpp_telemetry_lag_seconds gauge\n"
    )
    CHUNK = 5_000

    def __init__(self, source: Callable[[], Iterable[tuple[str, datetime]]], clock: Clock) -> None:
        self._source = source
        self._clock = clock
        self._names: dict[str, str] = {}

    async def render(self) -> bytes:
        rows = list(self._source())
        if len(self._names) > 2 * len(rows) + 1_000:  # assets gone: do not grow forever
            self._names.clear()
        now = self._clock()
        names = self._names
        parts = [self.HEADER]
        for start in range(0, len(rows), self.CHUNK):
            if start:
                await asyncio.sleep(0)
            for asset_id, ts in rows[start : start + self.CHUNK]:
                name = names.get(asset_id)
                if name is None:
                    name = names[asset_id] = (
                        f'vpp_telemetry_lag_seconds{{asset_id="{_escape(asset_id)}"}} '
                    )
                lag = (now - ts).total_seconds()
                parts.append(f"{name}{lag if lag > 0.0 else 0.0!r}\n")
        return "".join(parts).encode()


def _escape(value: str) -> str:
    """A label value as the text format wants it (backslash, quote, newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Every metric the headend exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lag: list[_LagText] = []
        r = self.registry
        self._gateways_metrics(r)
        self._telemetry_metrics(r)
        self._ingest_metrics(r)
        self._dispatch_metrics(r)
        self._process_metrics(r)
        self._events_metrics(r)

    def _gateways_metrics(self, r: CollectorRegistry) -> None:
        """Sessions, Register refusals and protocol errors."""
        self.gateways_connected = Gauge(
            "vpp_gateways_connected", "Gateway sessions open on this headend", registry=r
        )
        self.assets_served = Gauge(
            "vpp_assets_served", "Assets routable through open sessions", registry=r
        )
        self.sessions_total = Counter("vpp_gateway_sessions", "Gateway sessions opened", registry=r)
        self.disconnects = Counter(
            "vpp_gateway_disconnects", "Gateway sessions closed, by reason", ["reason"], registry=r
        )
        self.assets_rejected = Counter(
            "vpp_assets_rejected", "Asset claims refused at Register, by code", ["code"], registry=r
        )
        self.protocol_errors = Counter(
            "vpp_grpc_protocol_errors", "Malformed or out-of-order gRPC messages", registry=r
        )

    def _telemetry_metrics(self, r: CollectorRegistry) -> None:
        """Readings received, stored, and refused."""
        self.telemetry_received = Counter(
            "vpp_telemetry_received", "Readings received (before dedupe)", registry=r
        )
        self.telemetry_rows = Counter(
            "vpp_telemetry_rows_stored", "Readings written to history", registry=r
        )
        self.telemetry_rate = Gauge(
            "vpp_telemetry_rows_per_second",
            "Readings written per second (over the last few seconds)",
            registry=r,
        )
        self.telemetry_duplicates = Counter(
            "vpp_telemetry_duplicates", "Readings dropped as duplicate (asset_id, seq)", registry=r
        )
        self.telemetry_gaps = Counter(
            "vpp_telemetry_gaps", "Missing readings detected from seq jumps", registry=r
        )
        self.telemetry_dropped = Counter(
            "vpp_telemetry_dropped",
            "Readings refused, by reason (foreign_asset, no_asset, invalid, write_error)",
            ["reason"],
            registry=r,
        )
        self.telemetry_rejected = Counter(
            "vpp_telemetry_rejected",
            "Readings refused for their content, by reason: at intake (seq_out_of_range, "
            "ts_missing, ts_out_of_range, power_not_finite, power_out_of_range; these make up "
            "dropped{reason=invalid}) or by the database (write_error)",
            ["reason"],
            registry=r,
        )

    def _ingest_metrics(self, r: CollectorRegistry) -> None:
        """The ingest tasks, queue and writes."""
        self.ingest_task_up = Gauge(
            "vpp_ingest_task_up",
            "1 while an ingest task runs (writer: history; latest: latest values), 0 while "
            "it is down and waiting to be restarted",
            ["task"],
            registry=r,
        )
        self.ingest_task_restarts = Counter(
            "vpp_ingest_task_restarts",
            "Ingest tasks restarted after they stopped unexpectedly, by task",
            ["task"],
            registry=r,
        )
        self.ingest_queue_depth = Gauge(
            "vpp_ingest_queue_rows", "Readings waiting to be written", registry=r
        )
        self.ingest_write_seconds = Histogram(
            "vpp_ingest_batch_write_seconds",
            "Time to COPY one batch of readings",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    def _dispatch_metrics(self, r: CollectorRegistry) -> None:
        """Dispatch outcomes, acks and tracking error."""
        self.dispatches_created = Counter(
            "vpp_dispatches_created", "Dispatches created, by target kind", ["target"], registry=r
        )
        self.dispatches_final = Counter(
            "vpp_dispatches_final",
            "Dispatches by outcome: once when delivery settles or fails (applied, "
            "partially_applied, failed, rejected, expired, superseded), once more when "
            "control ends (completed, cancelled, released)",
            ["state"],
            registry=r,
        )
        self.ack_latency = Histogram(
            "vpp_setpoint_ack_latency_seconds",
            "Time from sending a setpoint to its final ack",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        # Signed, so it has negative buckets: the client then exposes no _sum (a sum of
        # signed errors would cancel out anyway); the ratio below has one.
        self.tracking_error = Histogram(
            "vpp_dispatch_tracking_error_kw",
            "Delivered minus requested power of applied dispatches, in kW (delivered: "
            "measured from telemetry after applying; docs/runbook.md section 5)",
            registry=r,
            buckets=(-1000, -100, -10, -1, -0.5, 0, 0.5, 1, 10, 100, 1000),
        )
        self.tracking_error_ratio = Histogram(
            "vpp_dispatch_tracking_error_ratio",
            "|delivered - requested| / max(|requested|, 1 kW) of applied dispatches",
            registry=r,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
        )
        self.acks_ignored = Counter(
            "vpp_setpoint_acks_ignored",
            "Acks that changed nothing (repeats, unknown setpoint, late)",
            ["why"],
            registry=r,
        )

    def _process_metrics(self, r: CollectorRegistry) -> None:
        """REST requests and database pool checkouts."""
        self.http_requests = Histogram(
            "vpp_http_request_duration_seconds",
            "REST requests: time in the app (auth, handler, database), by route template",
            ["method", "route", "status"],
            registry=r,
            buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.db_checkout = Histogram(
            "vpp_db_pool_checkout_seconds",
            "Time to get a pooled database connection (waits while all are in use)",
            registry=r,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
        )

    def _events_metrics(self, r: CollectorRegistry) -> None:
        """The live event streams of GET /events (events.py)."""
        self.events_clients = Gauge(
            "vpp_events_clients", "Clients subscribed to GET /events on this headend", registry=r
        )
        self.events_sent = Counter(
            "vpp_events_sent",
            "Events handed to GET /events clients, by event",
            ["event"],
            registry=r,
        )
        self.events_dropped = Counter(
            "vpp_events_dropped",
            "Events dropped for GET /events clients whose queue was full (each is told: overflow)",
            registry=r,
        )

    def add_lag_source(
        self,
        source: Callable[[], Iterable[tuple[str, datetime]]],
        clock: Clock = utc_now,
    ) -> None:
        """Export per-asset lag computed from ``source`` at scrape time."""
        self._lag.append(_LagText(source, clock))

    async def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        out = [generate_latest(self.registry)]
        for lag in self._lag:
            out.append(await lag.render())
        return b"".join(out)


__all__ = ["CONTENT_TYPE", "Metrics"]
