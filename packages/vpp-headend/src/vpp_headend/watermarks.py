"""Per-asset telemetry sequence tracking: duplicate detection and gap counting.

Each asset's readings carry a strictly increasing ``seq``. The tracker keeps the highest
seq accepted (``hwm``) and the ranges of missing seqs below it (``holes``), so a reading
is a duplicate exactly when its seq is at most ``hwm`` and not in a hole. Late readings
that fill a hole (a gateway replaying its spool while live readings flow) are accepted.

Holes are bounded (`MAX_HOLES` ranges, the oldest forgotten first) so a flapping
gateway cannot grow memory without bound; a reading in a forgotten hole counts as a
duplicate, which errs on the side of never storing a reading twice.
"""

from __future__ import annotations

from bisect import bisect_right

MAX_HOLES = 32
DUPLICATE = -1


class SeqTracker:
    """Highest seq seen and the missing ranges below it, for one asset."""

    __slots__ = ("holes", "hwm")

    def __init__(self, hwm: int = 0) -> None:
        self.hwm = hwm
        # Sorted, disjoint, inclusive [lo, hi] ranges of seqs not seen yet (all < hwm).
        self.holes: list[tuple[int, int]] = []

    def offer(self, seq: int) -> int:
        """Record ``seq``: `DUPLICATE` (-1) if seen before, else the number of new gaps."""
        hwm = self.hwm
        if seq > hwm:
            self.hwm = seq
            if seq == hwm + 1:
                return 0
            self.holes.append((hwm + 1, seq - 1))
            if len(self.holes) > MAX_HOLES:
                del self.holes[0]
            return seq - hwm - 1
        holes = self.holes
        if not holes:
            return DUPLICATE
        i = bisect_right(holes, (seq, 2**63)) - 1
        if i < 0:
            return DUPLICATE
        lo, hi = holes[i]
        if not lo <= seq <= hi:
            return DUPLICATE
        replacement = [r for r in ((lo, seq - 1), (seq + 1, hi)) if r[0] <= r[1]]
        holes[i : i + 1] = replacement
        return 0

    @property
    def missing(self) -> int:
        """Seqs below ``hwm`` not seen (within the remembered holes)."""
        return sum(hi - lo + 1 for lo, hi in self.holes)


__all__ = ["DUPLICATE", "MAX_HOLES", "SeqTracker"]
