"""Pure rules of the dispatch lifecycle (DESIGN.md §4): forward-only transitions and the
state of a dispatch from the states of its per-site deliveries.
"""

from __future__ import annotations

from collections.abc import Iterable

from .domain import STATE_RANK, TERMINAL_STATES

# Among terminal states of a multi-site dispatch, the most telling one wins.
_FINAL_PRECEDENCE = ("failed", "rejected", "expired")


def advances(current: str, new: str) -> bool:
    """True when moving from ``current`` to ``new`` is progress (never backwards, never
    out of a terminal state); a repeated state is not a move."""
    if current in TERMINAL_STATES:
        return False
    return STATE_RANK[new] > STATE_RANK[current]


def aggregate(states: Iterable[str]) -> str:
    """The state of a dispatch from its deliveries' states.

    While any delivery is in flight, the least progressed in-flight state (a group
    dispatch is ``pending`` while one member site is offline). Once all are final:
    ``applied`` if every delivery that was not superseded applied, ``superseded`` if all
    were superseded, else the first of failed, rejected, expired present.
    """
    states = list(states)
    if not states:
        return "pending"
    open_states = [s for s in states if s not in TERMINAL_STATES]
    if open_states:
        return min(open_states, key=STATE_RANK.__getitem__)
    effective = {s for s in states if s != "superseded"}
    if not effective:
        return "superseded"
    if effective == {"applied"}:
        return "applied"
    return next(s for s in _FINAL_PRECEDENCE if s in effective)


__all__ = ["advances", "aggregate"]
