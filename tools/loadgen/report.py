"""What a run measured (`Report`): the table printed at the end and the JSON fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    """What a run measured."""

    config: dict[str, Any]
    offered_readings_per_s: float = 0.0
    readings_per_s: float = 0.0
    rows_stored: int = 0
    window_s: float = 0.0
    connected: int = 0
    connect_s: float = 0.0
    lag_p50_s: float | None = None
    lag_p99_s: float | None = None
    lag_max_s: float | None = None
    lag_samples: int = 0
    dispatch_p50_ms: float | None = None
    dispatch_p99_ms: float | None = None
    # The same dispatches on the headend's clock (dispatch_events): issued -> applied
    # without the REST round trips and polling of the measurement.
    server_applied_p50_ms: float | None = None
    server_applied_p99_ms: float | None = None
    # The REST round trips inside the dispatch figure, and the harness parent's own CPU
    # (it posts, polls and runs the lag probe): what the REST view adds, and whether the
    # measuring side is the bottleneck.
    rest_post_p50_ms: float | None = None
    rest_post_p99_ms: float | None = None
    rest_get_p50_ms: float | None = None
    rest_get_p99_ms: float | None = None
    # POST /dispatch inside the headend (vpp_http_request_duration_seconds, bucket bounds):
    # the rest of the POST round trip is the HTTP server, the network and the client.
    post_in_app_p50_ms: float | None = None
    post_in_app_p99_ms: float | None = None
    parent_cpu_pct: float = 0.0
    # vpp_event_loop_lag_seconds over the window, all headends: the upper bound of the
    # histogram bucket holding the quantile (how long ready work waited for its turn).
    loop_lag_p50_ms: float | None = None
    loop_lag_p99_ms: float | None = None
    # Young-generation collections in the window (vpp_gc_pause_seconds{generation="0"}).
    gc_young_count: int = 0
    gc_young_p50_ms: float | None = None
    gc_young_p99_ms: float | None = None
    # Time to get a pooled connection (vpp_db_pool_checkout_seconds): waits on the pool.
    db_checkout_p50_ms: float | None = None
    db_checkout_p99_ms: float | None = None
    # The console (--console): GET /ui/ round trips on loopback, its time in the app
    # (bucket bounds), its size; one browser's /events messages per second by event.
    fleet_page_p50_ms: float | None = None
    fleet_page_p99_ms: float | None = None
    fleet_page_in_app_p50_ms: float | None = None
    fleet_page_in_app_p99_ms: float | None = None
    fleet_page_count: int = 0
    fleet_page_kb: float = 0.0
    events_per_s: dict[str, float] = field(default_factory=dict)
    events_batch_sites_max: int = 0
    dispatches: int = 0
    dispatches_applied: int = 0
    headend_cpu_pct: list[float] = field(default_factory=list)
    headend_rss_mb: list[float] = field(default_factory=list)
    db_backend_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0  # the client processes over the window, like the headend's
    client_cpu_total_s: float = 0.0  # their whole life: start-up, connects, teardown
    errors: dict[str, int] = field(default_factory=dict)
    # Every dispatch of the window (JSON only): [start unix s, POST s, POST -> APPLIED s]
    dispatch_timeline: list[tuple[float, float, float | None]] = field(default_factory=list)
    # Statements seen running >= 100 ms (JSON only; sampled every 0.1 s):
    # [unix s, wait type, wait event, seconds running, query head]
    db_slow_statements: list[tuple[float, str, str, float, str]] = field(default_factory=list)
    error_samples: dict[str, str] = field(default_factory=dict)
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def table(self) -> str:
        c = self.config
        lines = [
            f"load: {c['gateways']} gateways x {c['assets']} assets, cadence {c['cadence_s']} s, "
            f"{c['replicas']} headend replica(s)"
            f"{' + 1 REST-only replica' if c.get('control_replica') else ''}, "
            f"{c['client_procs']} client processes "
            f"({c['client']} client), "
            f"window {self.window_s:.1f} s",
            f"  connected                 {self.connected:>10} in {self.connect_s:.1f} s",
            f"  offered readings/s        {self.offered_readings_per_s:>10,.0f}",
            f"  stored readings/s         {self.readings_per_s:>10,.0f} "
            f"({self.rows_stored} rows in the window)",
            f"  telemetry lag p50 / p99   {_fmt(self.lag_p50_s, 's')} / {_fmt(self.lag_p99_s, 's')}"
            f" (max {_fmt(self.lag_max_s, 's')}, {self.lag_samples} samples, "
            f"poll {c['lag_poll_s']} s)",
            f"  dispatch POST->APPLIED    {_fmt(self.dispatch_p50_ms, 'ms')} / "
            f"{_fmt(self.dispatch_p99_ms, 'ms')} p50 / p99 "
            f"({self.dispatches_applied}/{self.dispatches} applied)",
            f"    on the headend's clock  {_fmt(self.server_applied_p50_ms, 'ms')} / "
            f"{_fmt(self.server_applied_p99_ms, 'ms')} p50 / p99 issued -> applied "
            "(dispatch_events; the rest is REST and polling)",
            f"    REST round trips        POST {_fmt(self.rest_post_p50_ms, 'ms')} / "
            f"{_fmt(self.rest_post_p99_ms, 'ms')}, GET {_fmt(self.rest_get_p50_ms, 'ms')} / "
            f"{_fmt(self.rest_get_p99_ms, 'ms')} p50 / p99 (harness parent CPU "
            f"{self.parent_cpu_pct:.0f}%)",
            f"    POST in the headend app <= {_fmt(self.post_in_app_p50_ms, 'ms')} / "
            f"<= {_fmt(self.post_in_app_p99_ms, 'ms')} p50 / p99 "
            "(vpp_http_request_duration_seconds)",
            f"  headend loop lag          <= {_fmt(self.loop_lag_p50_ms, 'ms')} / "
            f"<= {_fmt(self.loop_lag_p99_ms, 'ms')} p50 / p99 (vpp_event_loop_lag_seconds)",
            f"  young GC collections      {self.gc_young_count:>10}, pause <= "
            f"{_fmt(self.gc_young_p50_ms, 'ms')} / <= {_fmt(self.gc_young_p99_ms, 'ms')} "
            "p50 / p99 (vpp_gc_pause_seconds)",
            f"  database pool checkout    <= {_fmt(self.db_checkout_p50_ms, 'ms')} / "
            f"<= {_fmt(self.db_checkout_p99_ms, 'ms')} p50 / p99 (vpp_db_pool_checkout_seconds)",
            "  headend CPU (% of 1 core) "
            + ", ".join(f"{x:.0f}%" for x in self.headend_cpu_pct)
            + "   RSS "
            + ", ".join(f"{x:.0f} MB" for x in self.headend_rss_mb),
            f"  PostgreSQL backends CPU   {self.db_backend_cpu_pct:>9.0f}%   "
            f"clients CPU {self.client_cpu_pct:.0f}% "
            f"({self.client_cpu_total_s:.1f} CPU-s in all)",
            *self._console_lines(),
            f"  errors                    {self.errors or 'none'}",
            *(f"    {k}: {v}" for k, v in self.error_samples.items()),
            f"  load average              {' '.join(f'{x:.2f}' for x in self.loadavg)}",
        ]
        return "\n".join(lines)

    def _console_lines(self) -> list[str]:
        if not self.config.get("console"):
            return []
        rates = ", ".join(f"{k} {v:.2f}/s" for k, v in self.events_per_s.items()) or "none"
        return [
            f"  fleet page GET /ui/       {_fmt(self.fleet_page_p50_ms, 'ms')} / "
            f"{_fmt(self.fleet_page_p99_ms, 'ms')} p50 / p99 round trip, in the app <= "
            f"{_fmt(self.fleet_page_in_app_p50_ms, 'ms')} / "
            f"<= {_fmt(self.fleet_page_in_app_p99_ms, 'ms')} "
            f"({self.fleet_page_count} pages, {self.fleet_page_kb:.0f} kB)",
            f"  one browser's /events     {rates} "
            f"(at most {self.events_batch_sites_max} sites in a telemetry batch)",
        ]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if unit == "s" and value < 1 else f"{value:.2f} {unit}"
