"""The operator console under fleet load (issue 18): the fleet page fetched once a second
as a browser would, and one browser's live stream (`/events`, every site) counted.

What it reports: the fleet page's round trip on loopback (the server's time in the app
is ``vpp_http_request_duration_seconds{route="/ui"}``, read from /metrics by
`metrics.scrape`), its size, and how many messages a second one browser receives, by
event name, with the sites each telemetry batch carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx

from .fleet import HeadendProc


@dataclass
class ConsoleSeen:
    """What the console probes saw over the window."""

    page_s: list[float] = field(default_factory=list)
    page_bytes: list[int] = field(default_factory=list)
    page_errors: int = 0
    events: dict[str, int] = field(default_factory=dict)
    batch_sites: list[int] = field(default_factory=list)
    events_window_s: float = 0.0


async def probe_fleet_page(
    headend: HeadendProc, stop: asyncio.Event, seen: ConsoleSeen, interval_s: float = 1.0
) -> None:
    """GET /ui/ every ``interval_s`` until ``stop`` (one request at a time, like a person
    with the page open and a reload now and then — the page itself refreshes parts)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{headend.http_port}") as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                resp = await http.get("/ui/", timeout=10)
                body = resp.content
            except httpx.HTTPError:
                seen.page_errors += 1
            else:
                if resp.status_code == 200:
                    seen.page_s.append(time.perf_counter() - t0)
                    seen.page_bytes.append(len(body))
                else:
                    seen.page_errors += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


async def watch_events(headend: HeadendProc, stop: asyncio.Event, seen: ConsoleSeen) -> None:
    """One browser's stream of every site (the fleet page's subscription), counted by
    event name until ``stop``."""
    url = f"http://127.0.0.1:{headend.http_port}/events"
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
        reader = asyncio.create_task(_read(http, url, seen))
        await stop.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await reader
    seen.events_window_s = time.monotonic() - started


async def _read(http: httpx.AsyncClient, url: str, seen: ConsoleSeen) -> None:
    params = {"topics": "telemetry,gateway"}
    async with http.stream("GET", url, params=params) as resp:
        event, data = "message", False
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = True
                if event == "telemetry_batch":
                    seen.batch_sites.append(line.count('"site_id"'))
            elif not line:
                if data:  # a message; `retry:` and keepalive comments are not
                    seen.events[event] = seen.events.get(event, 0) + 1
                event, data = "message", False


__all__ = ["ConsoleSeen", "probe_fleet_page", "watch_events"]
