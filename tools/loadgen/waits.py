"""A sleep that the end of the measurement window cuts short."""

from __future__ import annotations

import asyncio
import contextlib


async def until(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
