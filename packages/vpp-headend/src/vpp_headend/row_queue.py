"""The ingest queue: row chunks from the stream handlers to the writer, bounded by rows
(a full queue makes `RowQueue.put` wait: backpressure, nothing dropped)."""

from __future__ import annotations

import asyncio
from collections import deque

from .db.telemetry_repo import Row


class RowQueue:
    """A FIFO of row chunks bounded by the total number of rows."""

    def __init__(self, max_rows: int) -> None:
        self._max = max_rows
        self._chunks: deque[list[Row]] = deque()
        self._rows = 0
        # Two conditions on one lock, and no notify_all on the hot path: a put wakes only
        # the writer; a get wakes the first waiting putter, and each putter that got room
        # wakes the next while room remains (a baton, FIFO). A shared condition with
        # notify_all wakes every waiting stream per frame: O(streams) (docs/scaling.md).
        lock = asyncio.Lock()
        self._not_empty = asyncio.Condition(lock)
        self._not_full = asyncio.Condition(lock)
        self._closed = False

    @property
    def depth(self) -> int:
        """Rows waiting."""
        return self._rows

    async def put(self, rows: list[Row]) -> None:
        """Append a chunk, waiting while the queue is full (an oversized chunk waits for empty)."""
        async with self._not_full:
            try:
                await self._not_full.wait_for(
                    lambda: self._closed or self._rows == 0 or self._rows + len(rows) <= self._max
                )
            except asyncio.CancelledError:
                self._not_full.notify()  # pass on a wake-up this putter may have taken
                raise
            self._chunks.append(rows)
            self._rows += len(rows)
            self._not_empty.notify()
            if self._rows < self._max:
                self._not_full.notify()

    async def get(self, max_rows: int) -> list[Row]:
        """Up to ``max_rows`` rows, waiting for the first; [] once closed and empty."""
        async with self._not_empty:
            await self._not_empty.wait_for(lambda: self._rows > 0 or self._closed)
            out: list[Row] = []
            while self._chunks and len(out) < max_rows:
                chunk = self._chunks[0]
                room = max_rows - len(out)
                if len(chunk) <= room:
                    out += self._chunks.popleft()
                else:
                    out += chunk[:room]
                    self._chunks[0] = chunk[room:]
            self._rows -= len(out)
            self._not_full.notify()
            return out

    async def close(self) -> None:
        """Let `get` return [] once empty and release waiting putters."""
        async with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()


__all__ = ["RowQueue"]
