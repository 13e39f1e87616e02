"""The fail-safe's clock (DESIGN.md §3b): how long the gateway has had no working session.

Silence counts from the last message heard from the headend on a registered session. At
start it counts from the last one a previous run heard (kept in the state database), so a
gateway that restarts over and over while cut off still fails safe; from the start when
none was ever heard. Once tripped it stays tripped until a message is heard again.
"""

from __future__ import annotations

#: Key of the last-heard time (epoch seconds) in the state database.
LAST_HEARD_KEY = "last_heard"
#: The last-heard time is written at most this often (seconds of silence it may be off by).
PERSIST_EVERY_S = 10.0


class FailSafe:
    """Silence bookkeeping on the monotonic clock; ``after_s == 0``: never trips."""

    def __init__(self, after_s: float, start_mono: float, silent_at_start_s: float = 0.0) -> None:
        self.after_s = after_s
        self._since = start_mono - max(silent_at_start_s, 0.0)
        #: Monotonic time it tripped; None while armed.
        self.tripped_at: float | None = None
        self._count_at_trip = 0

    @property
    def enabled(self) -> bool:
        return self.after_s > 0

    def silent_s(self, heard: float | None, now: float) -> float:
        """Seconds without a message; ``heard``: monotonic time of the last one, None: never."""
        since = self._since if heard is None else max(heard, self._since)
        return max(now - since, 0.0)

    def due(self, heard: float | None, now: float) -> bool:
        """Armed, and silent for ``after_s`` or more."""
        armed = self.enabled and self.tripped_at is None
        return armed and self.silent_s(heard, now) >= self.after_s

    def trip(self, now: float, heard_count: int) -> None:
        """Tripped at ``now``, when ``heard_count`` messages had been heard in all."""
        self.tripped_at = now
        self._count_at_trip = heard_count

    def rearm(self, heard_count: int) -> bool:
        """Re-arm once a message was heard after the trip; True when it did just now."""
        if self.tripped_at is None or heard_count <= self._count_at_trip:
            return False
        self.tripped_at = None
        return True


__all__ = ["LAST_HEARD_KEY", "PERSIST_EVERY_S", "FailSafe"]
