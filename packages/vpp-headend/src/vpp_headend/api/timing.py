"""``vpp_http_request_duration_seconds{method,route,status}``: each REST request's time
in the app (auth, handler, database), by route template — not by raw path, so a
dispatch id does not become a series.

Next to ``vpp_event_loop_lag_seconds`` it tells an operator where a slow answer comes
from: a slow route with low loop lag is the database; both high is a saturated process.

A streaming route (its handler has ``opt={"streaming": True}``: ``GET /events``) is not
timed: its "duration" is how long a browser kept the stream open, and one such value
would wreck every latency quantile and alert on the metric. Its own metrics
(``vpp_events_*``) say how it goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Histogram

#: The route handler ``opt`` key of a route whose response streams (not timed).
STREAMING = "streaming"


def request_timing(histogram: Histogram) -> Callable[[ASGIApp], ASGIApp]:
    """Litestar middleware (it runs after routing: ``path_template`` is known)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            handler = scope.get("route_handler")
            if handler is not None and handler.opt.get(STREAMING):
                await app(scope, receive, send)
                return
            method = scope["method"]
            started = time.perf_counter()
            status = 500  # what the server answers if the app raises before responding

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                histogram.labels(method, scope["path_template"], str(status)).observe(
                    time.perf_counter() - started
                )

        return timed

    return middleware


__all__ = ["STREAMING", "request_timing"]
