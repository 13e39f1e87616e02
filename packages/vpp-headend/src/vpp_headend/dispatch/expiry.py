"""The sweeper: ends deliveries that can no longer end on their own (docs/runbook.md §6).

``pending`` past ``expires_at`` → expired (never delivered late); ``sent`` with no ack
``ack_grace_s`` after it → expired; ``received`` with no final ack by then → failed (the
gateway had it; whether it acted is unknown).

Nothing else is the sweeper's: a settled delivery (applied, partially applied) stays in
force until the gateway says its control ended (RELEASED: its duration, the fail-safe, a
cancel), and ``expires_at`` bounds delivery, not control. A ``cancelling`` delivery is
never expired or failed either: its Release waits for the gateway's next session (sent
then, after its pending setpoints). One whose gateway never comes back stays
``cancelling``; on site, the gateway's own fail-safe (``failsafe_after_s``) releases the
assets once it has had no working session for that long, and the RELEASED ack it sends
when it reconnects ends the delivery ``cancelled``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..db import dispatch_repo as repo
from ..db import dispatch_routing as routing
from .deps import DispatchDeps
from .effects import AfterCommit, write
from .transitions import advance


def overdue(
    state: str, expires_at: datetime, now: datetime, ack_grace: timedelta
) -> tuple[str, str] | None:
    """(final state, reason) for a delivery in ``state`` that is overdue at ``now``."""
    if state == "pending" and expires_at <= now:
        return "expired", "expired before delivery"
    if expires_at > now - ack_grace:
        return None
    if state == "sent":
        return "expired", "no ack before expiry"
    if state == "received":
        return "failed", "no final ack"
    return None


class Sweeper:
    """Ends overdue deliveries, one dispatch per transaction."""

    def __init__(self, deps: DispatchDeps, *, ack_grace: timedelta) -> None:
        self._engine = deps.engine
        self._read = deps.read
        self._metrics = deps.metrics
        self._ack_grace = ack_grace
        self._clock = deps.clock

    async def sweep(self) -> int:
        """End what is overdue now. Returns deliveries ended."""
        now = self._clock()
        async with self._read.connect() as conn:
            ids = await routing.expirable(conn, now, now - self._ack_grace)
        ended = 0
        for dispatch_id in ids:
            after = AfterCommit(self._metrics)
            async with self._engine.begin() as conn:
                locked = await repo.lock_with_deliveries(conn, dispatch_id)
                if locked is None:
                    continue
                for site_id in sorted(locked.deliveries):
                    dlv = locked.deliveries[site_id]
                    end = overdue(dlv.state, locked.dispatch.expires_at, now, self._ack_grace)
                    if end is None:
                        continue
                    t = advance(locked, site_id, end[0], now, reason=end[1])
                    if t is None:
                        continue
                    await write(conn, t)
                    after.transition(t)
                    ended += 1
                    locked = t.applied_to(locked)  # the next move sees this one
            after.run()
        return ended


__all__ = ["Sweeper", "overdue"]
