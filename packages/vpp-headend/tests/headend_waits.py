"""Waiting in headend tests: poll a condition until it holds (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    within: float = 5.0,
    message: str | Callable[[], str] = "condition not met",
    *,
    every: float = 0.02,
) -> None:
    """Poll ``check`` (sync or async) every ``every`` s until it is true; fail after
    ``within`` s with ``message`` (a callable is asked then, to show the last state)."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        await asyncio.sleep(every)  # the poll interval, not a wait for anything


__all__ = ["eventually"]
