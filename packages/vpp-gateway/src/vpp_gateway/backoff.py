"""Reconnect delays: exponential backoff with full jitter."""

from __future__ import annotations

import random


class Backoff:
    """``delay(n) = U(0, min(cap, base · 2ⁿ))`` for the n-th consecutive failure (n from 0).

    Full jitter spreads a fleet of gateways that lost the headend at the same moment, so
    they do not all come back in the same second. `reset` after a stable session.
    """

    def __init__(self, base_s: float, cap_s: float, rng: random.Random) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError("need 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng
        self.attempt = 0

    def ceiling(self) -> float:
        """Upper bound of the next delay."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
