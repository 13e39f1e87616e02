"""What ``GET /events`` sends (DESIGN.md §5, "Live events"): the data of each event type
as msgspec structs, and `Message`, one event encoded once as Server-Sent Events bytes.

A message is encoded by the feed once per tick and the same bytes are queued to every
client that gets it: a hundred browsers on one site cost one encoding, not a hundred.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import msgspec

#: The topics a client may subscribe to (``?topics=``).
TOPICS: tuple[str, ...] = ("telemetry", "dispatch", "gateway")
#: ``retry:`` first: EventSource waits this long (ms) before reconnecting.
RETRY_MS = 3000
RETRY = f"retry: {RETRY_MS}\n\n".encode()
#: A comment line: proxies see traffic and keep the connection open.
KEEPALIVE = b": keepalive\n\n"


@dataclass(frozen=True, slots=True)
class Message:
    """One event: its type (the metric label) and its whole SSE frame."""

    event: str
    frame: bytes


def message(event: str, data: msgspec.Struct) -> Message:
    """``event: <event>`` with ``data`` as one line of JSON (JSON escapes every newline)."""
    return Message(event, b"event: %s\ndata: %s\n\n" % (event.encode(), msgspec.json.encode(data)))


class Hello(msgspec.Struct):
    """First event of every stream, once the feed has taken the client in: every change
    after it is sent (fetch current state over REST now)."""

    replica: str
    interval_s: float
    topics: list[str]
    sites: list[str] | None  # null: every site


class AssetReading(msgspec.Struct):
    """An asset's latest reading (as ``GET /telemetry/{asset_id}`` has it)."""

    asset_id: str
    ts: datetime
    seq: int
    power_kw: float
    soc_pct: float | None
    status: str
    setpoint_kw: float | None
    setpoint_id: str | None
    available_min_kw: float | None
    available_max_kw: float | None


class Telemetry(msgspec.Struct):
    """``telemetry``: a watched site's assets with a new reading since the last tick, and
    the summed latest power of all the site's non-meter assets."""

    site_id: str
    at: datetime
    assets: list[AssetReading]
    total_kw: float


class SiteSummary(msgspec.Struct):
    """One site in a ``telemetry_batch``."""

    site_id: str
    total_kw: float
    newest_ts: datetime
    assets_reporting: int


class TelemetryBatch(msgspec.Struct):
    """``telemetry_batch`` (subscriptions without ``site_id``): the sites whose summary
    changed since the last tick, one message per tick."""

    at: datetime
    sites: list[SiteSummary]


class Dispatch(msgspec.Struct):
    """``dispatch``: one stored transition (a ``dispatch_events`` row)."""

    dispatch_id: UUID
    event_id: int
    at: datetime
    state: str
    scope: str  # dispatch | site | asset
    scope_id: str | None
    detail: str | None
    target_kind: str
    target_id: str


class Gateway(msgspec.Struct):
    """``gateway``: a site's gateway connected (a new session) or disconnected."""

    site_id: str
    connected: bool
    connected_since: datetime | None
    disconnected_at: datetime | None
    reason: str | None
    replica: str | None
    agent_version: str | None
    assets_served: list[str]


class Overflow(msgspec.Struct):
    """``overflow``: this many messages were dropped (the client read too slowly);
    fetch current state again."""

    dropped: int


__all__ = [
    "KEEPALIVE",
    "RETRY",
    "RETRY_MS",
    "TOPICS",
    "AssetReading",
    "Dispatch",
    "Gateway",
    "Hello",
    "Message",
    "Overflow",
    "SiteSummary",
    "Telemetry",
    "TelemetryBatch",
    "message",
]
