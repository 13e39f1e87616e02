"""Pure rules of the dispatch lifecycle (DESIGN.md §4): forward-only transitions and the
state of a dispatch from the states of its per-site deliveries.
"""

from __future__ import annotations

from collections.abc import Iterable

from .domain import SETTLED_STATES, STATE_RANK, TERMINAL_STATES

# Among terminal states of a multi-site dispatch, the most telling one wins.
_FINAL_PRECEDENCE = ("failed", "rejected", "expired")
# Deliveries that end without the site taking part: they say nothing about the outcome.
_NOT_COUNTED = frozenset({"superseded", "skipped"})


def advances(current: str, new: str) -> bool:
    """True when moving from ``current`` to ``new`` is progress (never backwards, never
    out of a terminal state); a repeated state is not a move."""
    if current in TERMINAL_STATES:
        return False
    return STATE_RANK[new] > STATE_RANK[current]


def aggregate(states: Iterable[str]) -> str:
    """The state of a dispatch from its deliveries' states.

    While any delivery is in flight, the least progressed in-flight state (a group
    dispatch is ``pending`` while one member site is offline). Once all are final,
    ignoring superseded and skipped ones: ``applied`` if every delivery applied,
    ``partially_applied`` if every one applied and some took less than asked,
    ``superseded`` if none is left, else the first of failed, rejected, expired present.
    """
    states = list(states)
    if not states:
        return "pending"
    open_states = [s for s in states if s not in TERMINAL_STATES]
    if open_states:
        return min(open_states, key=STATE_RANK.__getitem__)
    effective = {s for s in states if s not in _NOT_COUNTED}
    if not effective:
        return "superseded"
    if effective <= SETTLED_STATES:
        return "partially_applied" if "partially_applied" in effective else "applied"
    return next(s for s in _FINAL_PRECEDENCE if s in effective)


__all__ = ["advances", "aggregate"]
