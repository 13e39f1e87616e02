"""Prometheus metrics of one headend (its own registry: no process-global state).

Operators alert on these (monitoring/prometheus/rules.yml), so three rules hold:

- **Counters, not rates.** Anything per second is ``rate()`` of a counter in PromQL; the
  app computes no rates (a gauge averaged over the app's own window hides spikes and
  cannot be summed across replicas).
- **Bounded series.** Telemetry freshness is one fleet-wide histogram plus one series per
  *site* (`vpp_site_last_reading_timestamp_seconds`); the per-asset series exist only when
  asked for (``Settings.metrics_per_asset``): 100,000 assets made 6.6 MB per scrape.
- **Timestamps, not ages.** A last-reading gauge holds a unix time, so it changes only when
  a reading arrives and ``time() - x`` in PromQL is its age on Prometheus's clock.

Gauges that describe current state (connected gateways, last readings, queue depth) are
computed when scraped or set where the state changes, so the hot path only bumps
counters.
"""

from __future__ import annotations

import asyncio
import platform
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily

from vpp_protocol import PROTOCOL_VERSION

from ._version import __version__

#: The media type of the exposition. No ``charset``: Litestar appends ``; charset=utf-8``
#: to every ``text/`` media type, and a second one confused strict scrapers.
CONTENT_TYPE = "text/plain; version=0.0.4"

K = TypeVar("K", bound=Hashable)


class ReadingTimes(Protocol):
    """When the newest stored reading of each site (and asset) was taken (`Ingest`)."""

    async def by_site(self) -> Sequence[tuple[str, datetime]]:
        """(site_id, ts of its newest stored reading)."""
        ...

    async def by_asset(self) -> Sequence[tuple[tuple[str, str], datetime]]:
        """((site_id, asset_id), ts of its newest stored reading)."""
        ...


class _SeriesText(Generic[K]):
    """One gauge family with a series per key, written straight to exposition text.

    In chunks that give the loop its turn, with each key's escaped series name kept:
    prometheus-client's generic path stalled the loop for a second per scrape at fleet
    size (docs/scaling.md, "Why the hot path looks as it does").
    """

    CHUNK = 5_000

    def __init__(
        self,
        name: str,
        help_text: str,
        rows: Callable[[], Awaitable[Sequence[tuple[K, datetime]]]],
        labels: Callable[[K], str],
    ) -> None:
        self._header = f"# HELP {name} {help_text}\n# TYPE {name} gauge\n"
        self._name = name
        self._rows = rows
        self._labels = labels
        self._names: dict[K, str] = {}

    async def render(self) -> bytes:
        rows = await self._rows()
        if len(self._names) > 2 * len(rows) + 1_000:  # keys gone: do not grow forever
            self._names.clear()
        names, name, labels = self._names, self._name, self._labels
        parts = [self._header]
        for start in range(0, len(rows), self.CHUNK):
            if start:
                await asyncio.sleep(0)
            for key, ts in rows[start : start + self.CHUNK]:
                prefix = names.get(key)
                if prefix is None:
                    prefix = names[key] = f"{name}{{{labels(key)}}} "
                parts.append(f"{prefix}{ts.timestamp()!r}\n")
        return "".join(parts).encode()


def _site_labels(site_id: str) -> str:
    return f'site_id="{_escape(site_id)}"'


def _asset_labels(key: tuple[str, str]) -> str:
    return f'site_id="{_escape(key[0])}",asset_id="{_escape(key[1])}"'


def _escape(value: str) -> str:
    """A label value as the text format wants it (backslash, quote, newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LagHistogram:
    """``vpp_telemetry_lag_seconds``: how old each reading was when it was stored.

    Observed once per stored reading, a batch at a time (`observe_since`): a plain loop
    into bucket counts costs about a third of ``Histogram.observe`` per reading, under 1 %
    of a core at 25,000 readings/s. Sampling every asset's age at each scrape instead
    would be cheaper still but wrong: each scrape (and each Prometheus scraping) would
    count every asset again, and offline assets would pile up in the last bucket.
    """

    NAME = "vpp_telemetry_lag_seconds"
    HELP = (
        "Seconds from a reading's timestamp (the gateway's clock) to its commit in the "
        "database, per stored reading (replayed readings count with their age)"
    )
    BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

    def __init__(self) -> None:
        self._counts = [0] * (len(self.BUCKETS) + 1)  # the last one: above every bucket
        self._sum = 0.0
        self._les = [repr(b) for b in self.BUCKETS]  # as the client writes them: 1.0

    def observe_since(self, now: datetime, timestamps: Iterable[datetime]) -> None:
        """Observe ``now - ts`` for each of ``timestamps`` (a reading from a gateway whose
        clock runs ahead counts as 0)."""
        counts, bounds, total = self._counts, self.BUCKETS, 0.0
        for ts in timestamps:
            lag = (now - ts).total_seconds()
            if lag < 0.0:
                lag = 0.0
            counts[bisect_left(bounds, lag)] += 1
            total += lag
        self._sum += total

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.NAME, self.HELP)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for le, n in zip(self._les, self._counts, strict=False):
            cumulative += n
            buckets.append((le, float(cumulative)))
        buckets.append(("+Inf", float(cumulative + self._counts[-1])))
        yield HistogramMetricFamily(self.NAME, self.HELP, buckets=buckets, sum_value=self._sum)


class Metrics:
    """Every metric the headend exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._texts: list[_SeriesText[str] | _SeriesText[tuple[str, str]]] = []
        self._probes: list[Callable[[], Awaitable[object]]] = []
        r = self.registry
        self._build_metrics(r)
        self._gateways_metrics(r)
        self._telemetry_metrics(r)
        self._ingest_metrics(r)
        self._dispatch_metrics(r)
        self._process_metrics(r)
        self._events_metrics(r)

    def _build_metrics(self, r: CollectorRegistry) -> None:
        """What runs: the release, the Python (``python_info``), the process's CPU, memory
        and file descriptors (``process_*``, where /proc exists)."""
        Info(
            "vpp_headend_build",
            "The vpp-headend release, Python and gateway protocol version this process runs",
            registry=r,
        ).info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "protocol_version": str(PROTOCOL_VERSION),
            }
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

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
        self.telemetry_lag = LagHistogram()
        r.register(self.telemetry_lag)
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
        self.ingest_queue_capacity = Gauge(
            "vpp_ingest_queue_capacity_rows",
            "Readings the ingest queue holds at most (ingest_queue_rows); when full, streams "
            "wait (backpressure)",
            registry=r,
        )
        self.database_up = Gauge(
            "vpp_database_up",
            "1 when the database answered the last check (each scrape and each /ready), 0 "
            "when it did not within 2 s",
            registry=r,
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
        """The live event streams of GET /events (events/)."""
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

    def add_reading_times(self, source: ReadingTimes, *, per_asset: bool = False) -> None:
        """Export, at scrape time, when each site's newest stored reading was taken
        (``vpp_site_last_reading_timestamp_seconds{site_id}``) and, with ``per_asset``,
        each asset's (``vpp_asset_last_reading_timestamp_seconds{site_id,asset_id}``)."""
        self._texts.append(
            _SeriesText(
                "vpp_site_last_reading_timestamp_seconds",
                "Unix time of the newest stored reading of each site (its gateway's clock); "
                "time() - this is how stale the site is",
                source.by_site,
                _site_labels,
            )
        )
        if per_asset:
            self._texts.append(
                _SeriesText(
                    "vpp_asset_last_reading_timestamp_seconds",
                    "Unix time of the newest stored reading of each asset (only with "
                    "metrics_per_asset: one series per asset)",
                    source.by_asset,
                    _asset_labels,
                )
            )

    def add_probe(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Run ``probe`` before each scrape (it sets a gauge, e.g. `database_up`)."""
        self._probes.append(probe)

    async def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        for probe in self._probes:
            await probe()
        out = [generate_latest(self.registry)]
        for text in self._texts:
            out.append(await text.render())
        return b"".join(out)


__all__ = ["CONTENT_TYPE", "LagHistogram", "Metrics", "ReadingTimes"]
