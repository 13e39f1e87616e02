"""Which asyncio event loop a headend process runs on.

uvloop (libuv) runs the same asyncio code with transports, timers and callbacks in C;
a headend holding thousands of gRPC streams spends much of its time there (docs/scaling.md
measures it). ``auto`` picks uvloop where it is installed (the wheel depends on it except
on Windows) and falls back to the standard loop; ``asyncio`` forces the standard one.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

LOOPS = ("auto", "uvloop", "asyncio")


class LoopUnavailableError(RuntimeError):
    """``uvloop`` was asked for but is not installed."""


def uvloop_available() -> bool:
    """True when the uvloop package can be imported."""
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``asyncio.Runner``: uvloop's, or None for the standard loop."""
    if name not in LOOPS:
        raise ValueError(f"event_loop: must be one of {', '.join(LOOPS)}, not {name!r}")
    if name == "asyncio" or (name == "auto" and not uvloop_available()):
        return None
    try:
        import uvloop
    except ImportError:
        raise LoopUnavailableError(
            "event_loop: uvloop is not installed (pip install uvloop, or --loop asyncio)"
        ) from None
    new_event_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_event_loop


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop the caller runs on (for logs and metrics)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


__all__ = ["LOOPS", "LoopUnavailableError", "loop_factory", "running_loop_name", "uvloop_available"]
