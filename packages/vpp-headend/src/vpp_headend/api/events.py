"""GET /events: live telemetry, dispatch transitions and gateway connects as Server-Sent
Events (DESIGN.md §5, "Live events"; the feed is `vpp_headend.events`)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, TypeAlias

from litestar import Controller, get
from litestar.background_tasks import BackgroundTask
from litestar.params import QueryParameter
from litestar.response import Stream

from ..errors import ValidationFailedError
from ..events import EventFeed, Subscription
from ..events.messages import KEEPALIVE, RETRY, TOPICS
from .deps import EventsDep, SettingsDep
from .params import ID_REGEX
from .problems import problem_responses
from .timing import STREAMING

#: Site ids one stream may name (each is watched in detail; the fleet view names none).
MAX_SITES = 100
_ID = re.compile(ID_REGEX)

SiteIdsQuery: TypeAlias = Annotated[
    list[str] | None,
    QueryParameter(
        description=f"only these sites (repeat the parameter, at most {MAX_SITES}); "
        "none: every site, telemetry as one `telemetry_batch` per tick",
    ),
]
TopicsQuery: TypeAlias = Annotated[
    str | None,
    QueryParameter(description=f"comma-separated, of {', '.join(TOPICS)} (default: all)"),
]

_DESCRIPTION = """\
A `text/event-stream` of what changes, on any replica: it starts with `retry: 3000` and
`event: hello` `{replica, interval_s, topics, sites}`, sent once the feed has taken the
subscription in: every change after it is sent. Then, at most once per `interval_s` tick:

- `telemetry` (with `site_id`): one per watched site with new readings,
  `{site_id, at, assets: [{asset_id, ts, seq, power_kw, soc_pct, status, setpoint_kw,
  setpoint_id, available_min_kw, available_max_kw}], total_kw}` — the assets with a new
  reading; `total_kw` sums the latest power of all the site's non-meter assets. Right
  after `hello`, one per watched site with every asset's reading.
- `telemetry_batch` (without `site_id`): `{at, sites: [{site_id, total_kw, newest_ts,
  assets_reporting}]}`, the sites whose summary changed; right after `hello`, every site.
- `dispatch`: `{dispatch_id, event_id, at, state, scope, scope_id, detail, target_kind,
  target_id}`, one per stored transition, in order; with `site_id`, those of dispatches
  delivered to (or targeting) a watched site.
- `gateway`: `{site_id, connected, connected_since, disconnected_at, reason, replica,
  agent_version, assets_served}` when a site's gateway connects or disconnects.
- `overflow` `{dropped}`: the client read too slowly and this many messages were dropped;
  reconnect (or fetch state again). A client that stays that far behind is disconnected.

A `: keepalive` comment comes on a quiet stream. Messages carry no `id`: there is no
replay; after a reconnect the stream starts again with `hello`.
"""


class EventsController(Controller):
    """The live event stream."""

    tags = ["events"]  # noqa: RUF012

    @get(
        "/events",
        media_type="text/event-stream",
        description=_DESCRIPTION,
        response_description="Server-Sent Events",
        responses=problem_responses(401, 422),
        opt={STREAMING: True},  # a stream's lifetime is no request duration (`timing`)
    )
    async def events(
        self,
        events: EventsDep,
        settings: SettingsDep,
        site_id: SiteIdsQuery = None,
        topics: TopicsQuery = None,
    ) -> Stream:
        """Live events (Server-Sent Events), for the sites and topics asked for."""
        chosen = _topics(topics)
        sites = _sites(site_id)
        sub = events.subscribe(chosen, sites)
        return Stream(
            _frames(events, sub, settings.events_keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            # Frees the subscription when the client goes while its stream waits in a
            # send (the generator's own `finally` covers a wait in the feed).
            background=BackgroundTask(events.unsubscribe, sub),
        )


async def _frames(feed: EventFeed, sub: Subscription, keepalive_s: float) -> AsyncIterator[bytes]:
    """The stream's bytes: the feed's messages as they come, keepalives between."""
    try:
        yield RETRY
        while True:
            msg = await sub.get(keepalive_s)
            if msg is not None:
                yield msg.frame
            elif sub.closed:
                return
            else:
                yield KEEPALIVE
    finally:
        feed.unsubscribe(sub)


def _topics(raw: str | None) -> list[str]:
    """The topics asked for (all when not given); 422 for an unknown one."""
    if raw is None:
        return list(TOPICS)
    chosen = [t.strip() for t in raw.split(",")]
    if any(t not in TOPICS for t in chosen):
        raise ValidationFailedError(
            f"topics: must be a comma-separated list of {', '.join(TOPICS)}", field="topics"
        )
    return list(dict.fromkeys(chosen))


def _sites(raw: list[str] | None) -> list[str] | None:
    """The site ids asked for (None: every site); 422 for a malformed one or too many."""
    if not raw:
        return None
    if any(not _ID.search(s) for s in raw):
        raise ValidationFailedError(
            "site_id: each must be 1 to 64 of A-Z a-z 0-9 . _ -", field="site_id"
        )
    sites = list(dict.fromkeys(raw))
    if len(sites) > MAX_SITES:
        raise ValidationFailedError(f"site_id: at most {MAX_SITES} sites", field="site_id")
    return sites


__all__ = ["EventsController"]
