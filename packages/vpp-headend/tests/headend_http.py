"""An HTTP client on a headend's app that runs the app on the test's own event loop.

Not Litestar's AsyncTestClient for a headend a test started: that client runs the app on
a portal thread's event loop and blocks the test's loop while a request runs, so a
handler that waits for anything of the headend's (its pool, a lock, a task) waits for a
loop that cannot run: a cancel once hung there for good. The lifespan does not run: the
headend given to `create_app` is the test's.
"""

from __future__ import annotations

import httpx
from litestar import Litestar


def app_client(app: Litestar) -> httpx.AsyncClient:
    """Requests to ``app`` in this event loop (use it as an async context manager)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
