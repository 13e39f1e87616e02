"""The live event feed behind ``GET /events`` (docs/decisions.md, "Live events").

The replica that holds a gateway's stream is not necessarily the one serving the browser,
so the database is the bus: one `EventFeed` per process reads what changed from the
tables every replica writes — dispatch transitions, gateway session rows, latest
readings — every ``events_interval_s``, and only while a client is subscribed. Each tick
makes at most four statements, whatever the number of clients or sites, and the feed
never touches the ingest path: a slow browser cannot slow ingest. On the replica that
holds a watched site's gateway, the readings it holds in memory are newer than the
table (flushed every ``latest_flush_interval_s``) and are sent instead.

Each client is a `Subscription`: a bounded queue the feed offers to and never waits on.
A full queue drops (counted; the client is sent ``overflow`` with the count when it has
room again, and re-fetches state), and a client whose queue stays full for
``events_stall_s`` is dropped from the feed.

The parts: `subscription` (a client's queue), `changes` (what changed since the last
tick, and the messages saying so: no I/O), `feed` (the ticker: reads, fan-out),
`messages` (the event types and their encoding).
"""

from __future__ import annotations

from .feed import EventFeed
from .subscription import ClientStats, Subscription

__all__ = ["ClientStats", "EventFeed", "Subscription"]
