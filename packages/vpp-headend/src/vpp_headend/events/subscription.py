"""One client of the live event feed: the topics and sites it asked for and its bounded
queue, which the feed offers to and never waits on."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from ..metrics import Metrics
from . import messages as em
from .messages import Message, message


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A subscribed client as the feed sees it (a snapshot, read-only)."""

    topics: tuple[str, ...]
    sites: tuple[str, ...] | None  # None: every site
    queued: int  # messages waiting for the client to read them
    bound: int  # at most this many ever wait
    dropped: int  # messages dropped since it connected
    live: bool  # its hello was sent: it gets every change from then on


class Subscription:
    """One client: the topics and sites it asked for and its bounded queue.

    The feed calls `offer` (never waits); the client's stream awaits `get`.
    """

    def __init__(
        self,
        topics: frozenset[str],
        sites: frozenset[str] | None,
        *,
        bound: int,
        metrics: Metrics,
    ) -> None:
        self.topics = topics
        self.sites = sites
        self.bound = bound
        self.live = False
        self.closed = False
        self.dropped = 0
        self.full_since: float | None = None
        self._metrics = metrics
        self._queue: deque[Message] = deque()
        self._lost = 0  # dropped since the last overflow notice
        self._wake = asyncio.Event()

    def wants(self, topic: str, site_id: str | None = None) -> bool:
        """True when the client asked for ``topic`` (for ``site_id``, when given)."""
        if topic not in self.topics:
            return False
        return site_id is None or self.sites is None or site_id in self.sites

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.bound

    def offer(self, msg: Message) -> None:
        """Queue ``msg`` unless the queue is full (then it is dropped and counted). After
        drops, the overflow notice goes first, in order, once there is room for both."""
        if self.closed:
            return
        if self._lost and len(self._queue) + 2 <= self.bound:
            self._queue.append(self._overflow())
        if self._lost or len(self._queue) >= self.bound:
            self._lost += 1
            self.dropped += 1
            self._metrics.events_dropped.inc()
            return
        self._queue.append(msg)
        self._wake.set()

    async def get(self, wait_s: float) -> Message | None:
        """The next message; None when none came within ``wait_s`` (time for a keepalive)
        or the subscription is closed (`closed` then says so)."""
        while not self.closed:
            if self._queue:
                msg = self._queue.popleft()
            elif self._lost:  # drained after drops, and nothing new came
                msg = self._overflow()
            else:
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                except TimeoutError:
                    return None
                continue
            self._metrics.events_sent.labels(msg.event).inc()
            return msg
        return None

    def close(self) -> None:
        """End the subscription: `get` returns None at once and nothing more is queued."""
        self.closed = True
        self._queue.clear()
        self._wake.set()

    def stats(self) -> ClientStats:
        return ClientStats(
            topics=tuple(sorted(self.topics)),
            sites=None if self.sites is None else tuple(sorted(self.sites)),
            queued=len(self._queue),
            bound=self.bound,
            dropped=self.dropped,
            live=self.live,
        )

    def _overflow(self) -> Message:
        msg = message("overflow", em.Overflow(dropped=self._lost))
        self._lost = 0
        return msg


__all__ = ["ClientStats", "Subscription"]
