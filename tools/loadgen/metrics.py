"""The headends' /metrics read at both ends of the window, and the quantiles made of it
and of the harness's own samples."""

from __future__ import annotations

import math
import re
import statistics

import httpx

from .fleet import HeadendProc

_ROWS_STORED = re.compile(r"^vpp_telemetry_rows_stored_total (\S+)$", re.M)
# Histograms read at both ends of the window, summed over the headends: name -> the
# metric and the labels its series must carry (besides le).
_BUCKETS: dict[str, tuple[str, dict[str, str]]] = {
    "loop_lag": ("vpp_event_loop_lag_seconds", {}),
    "post_in_app": (
        "vpp_http_request_duration_seconds",
        {"method": "POST", "route": "/dispatch", "status": "202"},
    ),
    "gc_young": ("vpp_gc_pause_seconds", {"generation": "0"}),
    "db_checkout": ("vpp_db_pool_checkout_seconds", {}),
    "fleet_page": (
        "vpp_http_request_duration_seconds",
        {"method": "GET", "route": "/ui", "status": "200"},
    ),
}
_BUCKET_LINE = re.compile(r"^(\w+)_bucket\{([^}]*)\} (\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def scrape(
    http: httpx.AsyncClient, headends: list[HeadendProc]
) -> tuple[float, dict[str, dict[float, float]]]:
    """Rows stored and the cumulative buckets of each histogram in ``_BUCKETS``, summed
    over the headends (one /metrics scrape each)."""
    rows = 0.0
    buckets: dict[str, dict[float, float]] = {name: {} for name in _BUCKETS}
    for h in headends:
        text = (await http.get(f"http://127.0.0.1:{h.http_port}/metrics")).text
        if m := _ROWS_STORED.search(text):
            rows += float(m.group(1))
        for m in _BUCKET_LINE.finditer(text):
            metric, value = m.group(1), float(m.group(3))
            labels = dict(_LABEL.findall(m.group(2)))
            for name, (wanted, required) in _BUCKETS.items():
                if metric == wanted and required.items() <= labels.items():
                    le = float(labels["le"])
                    buckets[name][le] = buckets[name].get(le, 0.0) + value
    return rows, buckets


async def stored_rows(http: httpx.AsyncClient, headends: list[HeadendProc]) -> float:
    """Rows stored by all the headends (``vpp_telemetry_rows_stored_total``)."""
    return (await scrape(http, headends))[0]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def p50_p99_ms(seconds: list[float]) -> tuple[float | None, float | None]:
    """Median and 99th percentile in ms (None, None without samples)."""
    if not seconds:
        return None, None
    ms = [x * 1000 for x in seconds]
    return statistics.median(ms), pct(ms, 0.99)


def bucket_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """Upper bound (ms) of the first bucket whose cumulative count reaches quantile ``q``."""
    total = cumulative.get(math.inf, 0.0)
    if total <= 0:
        return None
    for le in sorted(cumulative):
        if cumulative[le] >= q * total:
            return le * 1000
    return None


def bucket_p50_p99_ms(cumulative: dict[float, float]) -> tuple[float | None, float | None]:
    """`bucket_quantile` at the median and the 99th percentile."""
    return bucket_quantile(cumulative, 0.5), bucket_quantile(cumulative, 0.99)
