"""Pure rules of the dispatch lifecycle (DESIGN.md §4, §3b): forward-only transitions and
the state of a dispatch from the states of its per-site deliveries.
"""

from __future__ import annotations

from collections.abc import Iterable

from .domain import IN_FLIGHT_STATES, SETTLED_STATES, STATE_RANK, TERMINAL_STATES

# Among ended deliveries of a multi-site dispatch, the most telling one wins: the
# operator's cancel, then the fail-safe, then a failure of delivery. `completed` only
# when every counted delivery completed.
_ENDED_PRECEDENCE = ("cancelled", "released", "failed", "rejected", "expired", "completed")
# Deliveries that end without the site taking part: they say nothing about the outcome.
_NOT_COUNTED = frozenset({"superseded", "skipped"})
# Deliveries that never took the setpoint: beside a settled one, the dispatch fell short.
_NOT_TAKEN = frozenset({"failed", "rejected", "expired"})


def advances(current: str, new: str) -> bool:
    """True when moving from ``current`` to ``new`` is progress (never backwards, never
    out of a terminal state); a repeated state is not a move."""
    if current in TERMINAL_STATES:
        return False
    return STATE_RANK[new] > STATE_RANK[current]


def aggregate(states: Iterable[str]) -> str:
    """The state of a dispatch from its deliveries' states.

    1. While any delivery is in flight, the least progressed in-flight state (a group
       dispatch is ``pending`` while one member site is offline).
    2. Else, while any is ``cancelling``: ``cancelling``.
    3. Else, while any is in force (applied or partially applied): ``applied`` if every
       counted delivery that is not in force any more took it too (its control ended),
       ``partially_applied`` if one in force took less or another never took it at all
       (failed, rejected, expired). A dispatch with anything in force is not ended: it
       can still be cancelled.
    4. Else (all ended), ignoring superseded and skipped deliveries: ``superseded`` if
       none is left, ``completed`` if every one completed, else the first present of
       cancelled, released, failed, rejected, expired.
    """
    states = list(states)
    if not states:
        return "pending"
    in_flight = [s for s in states if s in IN_FLIGHT_STATES]
    if in_flight:
        return min(in_flight, key=STATE_RANK.__getitem__)
    if "cancelling" in states:
        return "cancelling"
    counted = {s for s in states if s not in _NOT_COUNTED}
    if counted & SETTLED_STATES:
        short = "partially_applied" in counted or bool(counted & _NOT_TAKEN)
        return "partially_applied" if short else "applied"
    if not counted:
        return "superseded"
    return next(s for s in _ENDED_PRECEDENCE if s in counted)


__all__ = ["advances", "aggregate"]
