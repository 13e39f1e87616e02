"""The measurement in the harness parent: wait for the fleet to connect, settle one
cadence, then sample CPU, /metrics and the database over one window while the lag probe,
the slow-statement watch and the REST dispatcher run; fill the `Report`."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass

import httpx

from .config import LoadConfig
from .console import ConsoleSeen, probe_fleet_page, watch_events
from .dbsample import backend_pids, db_watch, lag_monitor, server_applied_ms
from .dispatcher import Rest, run_dispatcher
from .fleet import ClientProcs, HeadendProc
from .messages import asset_id
from .metrics import bucket_p50_p99_ms, p50_p99_ms, pct, scrape
from .procstat import cpu_s, rss_mb, self_cpu_s
from .report import Report


@dataclass(frozen=True)
class _Pids:
    headends: list[int]
    clients: list[int]
    backends: list[int]  # the load database's PostgreSQL backends at the window's start


@dataclass(frozen=True)
class _Sample:
    """CPU seconds and the headends' counters at one end of the window."""

    t: float
    parent: float
    headends: list[float]
    clients: float
    backends: dict[int, float]
    rows: float
    buckets: dict[str, dict[float, float]]


@dataclass
class _Seen:
    """What the tasks of the window collected."""

    lags: list[float]
    rest: Rest
    db_slow: list[tuple[float, str, str, float, str]]
    server_ms: list[float]
    console: ConsoleSeen


async def measure(
    url: str, headends: list[HeadendProc], cfg: LoadConfig, report: Report, fleet: ClientProcs
) -> None:
    """Wait for the fleet, settle, measure one ``cfg.duration_s`` window into ``report``."""
    t_connect = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as http:
        await _await_connected(headends, cfg, report, fleet, t_connect)
        # One cadence to settle into the steady state (every gateway sent once).
        await asyncio.sleep(cfg.cadence_s)
        pids = _Pids(
            [h.proc.pid for h in headends],
            [p.pid for p in fleet.procs if p.pid is not None],
            await backend_pids(url),
        )
        start = await _opening(http, headends, pids)
        stop = asyncio.Event()
        seen = _Seen(lags=[], rest=Rest(), db_slow=[], server_ms=[], console=ConsoleSeen())
        probes = [asset_id(g, 0) for g in range(min(cfg.probe_assets, cfg.gateways))]
        monitor = asyncio.create_task(
            lag_monitor(url, probes, time.time(), stop, cfg.lag_poll_s, seen.lags)
        )
        watch = asyncio.create_task(db_watch(url, stop, seen.db_slow))
        rest = headends[cfg.replicas :] if cfg.control_replica else headends
        dispatcher = asyncio.create_task(run_dispatcher(rest, cfg, stop, seen.rest, report.errors))
        console = (
            [
                asyncio.create_task(probe_fleet_page(rest[0], stop, seen.console)),
                asyncio.create_task(watch_events(rest[0], stop, seen.console)),
            ]
            if cfg.console
            else []
        )
        await asyncio.sleep(cfg.duration_s)
        end = await _closing(http, headends, pids)
        report.headend_rss_mb = [rss_mb(p) for p in pids.headends]
        stop.set()
        report.dispatches = await dispatcher
        await monitor
        await watch
        await asyncio.gather(*console)
        seen.server_ms = await server_applied_ms(url)
    _fill_window(report, start, end)
    _fill_latency(report, seen)
    _fill_buckets(report, start.buckets, end.buckets)
    _fill_console(report, seen.console)


async def _await_connected(
    headends: list[HeadendProc], cfg: LoadConfig, report: Report, fleet: ClientProcs,
    t_connect: float,
) -> None:  # fmt: skip
    """Until every gateway connected or failed, or the connect timeout."""
    while (
        fleet.connected.value + fleet.failed.value < cfg.gateways
        and time.monotonic() - t_connect < cfg.connect_timeout_s
    ):
        if not all(p.is_alive() for p in fleet.procs):
            raise RuntimeError("a client process died (see its traceback above)")
        if any(h.proc.poll() is not None for h in headends):
            raise RuntimeError("a headend process died")
        await asyncio.sleep(0.2)
    report.connected = int(fleet.connected.value)
    report.connect_s = time.monotonic() - t_connect


async def _opening(http: httpx.AsyncClient, headends: list[HeadendProc], pids: _Pids) -> _Sample:
    headends_cpu = [cpu_s(p) for p in pids.headends]
    clients_cpu = sum(cpu_s(p) for p in pids.clients)
    backends_cpu = {p: cpu_s(p) for p in pids.backends}
    rows, buckets = await scrape(http, headends)
    parent = self_cpu_s()
    return _Sample(time.monotonic(), parent, headends_cpu, clients_cpu, backends_cpu, rows, buckets)


async def _closing(http: httpx.AsyncClient, headends: list[HeadendProc], pids: _Pids) -> _Sample:
    """The same as `_opening` in the mirror order, so the window holds one of each step."""
    rows, buckets = await scrape(http, headends)
    t = time.monotonic()
    parent = self_cpu_s()
    headends_cpu = [cpu_s(p) for p in pids.headends]
    clients_cpu = sum(cpu_s(p) for p in pids.clients)
    backends_cpu = {p: cpu_s(p) for p in pids.backends}
    return _Sample(t, parent, headends_cpu, clients_cpu, backends_cpu, rows, buckets)


def _fill_window(report: Report, start: _Sample, end: _Sample) -> None:
    """Throughput and CPU over the window."""
    report.window_s = end.t - start.t
    report.rows_stored = int(end.rows - start.rows)
    report.readings_per_s = (end.rows - start.rows) / report.window_s
    report.headend_cpu_pct = [
        100 * (b - a) / report.window_s for a, b in zip(start.headends, end.headends, strict=True)
    ]
    # A backend that ended in the window reads 0 at the end (or its pid was reused): skip.
    db0, db1 = start.backends, end.backends
    db_cpu = sum(db1[p] - db0[p] for p in db0 if db1[p] >= db0[p] > 0)
    report.client_cpu_pct = 100 * (end.clients - start.clients) / report.window_s
    report.db_backend_cpu_pct = 100 * db_cpu / report.window_s
    report.parent_cpu_pct = 100 * (end.parent - start.parent) / report.window_s


def _fill_latency(report: Report, seen: _Seen) -> None:
    """Telemetry lag, the dispatch timings (REST view and the headend's clock)."""
    lags = seen.lags
    if lags:
        report.lag_p50_s = statistics.median(lags)
        report.lag_p99_s = pct(lags, 0.99)
        report.lag_max_s = max(lags)
        report.lag_samples = len(lags)
    report.dispatches_applied = len(seen.rest.applied)
    report.dispatch_timeline = sorted(seen.rest.timeline)
    report.db_slow_statements = seen.db_slow
    report.dispatch_p50_ms, report.dispatch_p99_ms = p50_p99_ms(seen.rest.applied)
    report.rest_post_p50_ms, report.rest_post_p99_ms = p50_p99_ms(seen.rest.post)
    report.rest_get_p50_ms, report.rest_get_p99_ms = p50_p99_ms(seen.rest.get)
    if seen.server_ms:
        report.server_applied_p50_ms = statistics.median(seen.server_ms)
        report.server_applied_p99_ms = pct(seen.server_ms, 0.99)


def _fill_console(report: Report, seen: ConsoleSeen) -> None:
    """The fleet page's round trips and size, one browser's live message rate."""
    report.fleet_page_p50_ms, report.fleet_page_p99_ms = p50_p99_ms(seen.page_s)
    report.fleet_page_count = len(seen.page_s)
    report.fleet_page_kb = max(seen.page_bytes, default=0) / 1024
    if seen.page_errors:
        report.errors["fleet_page"] = seen.page_errors
    if seen.events_window_s > 0:
        report.events_per_s = {
            name: n / seen.events_window_s for name, n in sorted(seen.events.items())
        }
    if seen.batch_sites:
        report.events_batch_sites_max = max(seen.batch_sites)


def _fill_buckets(
    report: Report,
    before: dict[str, dict[float, float]],
    after: dict[str, dict[float, float]],
) -> None:
    """The histograms' quantiles over the window (bucket upper bounds, ms)."""
    window = {  # a series first seen in the window (no POST before it) counts from 0
        name: {le: n - before[name].get(le, 0.0) for le, n in counts.items()}
        for name, counts in after.items()
    }
    report.loop_lag_p50_ms, report.loop_lag_p99_ms = bucket_p50_p99_ms(window["loop_lag"])
    report.post_in_app_p50_ms, report.post_in_app_p99_ms = bucket_p50_p99_ms(window["post_in_app"])
    report.gc_young_p50_ms, report.gc_young_p99_ms = bucket_p50_p99_ms(window["gc_young"])
    report.gc_young_count = int(window["gc_young"].get(math.inf, 0.0))
    report.db_checkout_p50_ms, report.db_checkout_p99_ms = bucket_p50_p99_ms(window["db_checkout"])
    report.fleet_page_in_app_p50_ms, report.fleet_page_in_app_p99_ms = bucket_p50_p99_ms(
        window["fleet_page"]
    )
