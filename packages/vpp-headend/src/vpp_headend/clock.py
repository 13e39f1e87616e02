"""The headend's wall clock: what its parts take to read "now" (tests inject another)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeAlias

#: Reads "now", timezone-aware in UTC.
Clock: TypeAlias = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


__all__ = ["Clock", "utc_now"]
