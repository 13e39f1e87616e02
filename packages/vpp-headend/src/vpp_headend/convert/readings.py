"""Telemetry readings in: a reading straight to a COPY row (the telemetry hot path), and
the range checks on wire timestamps and power values that acks share."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal, get_args

from vpp_protocol.upb import pb

from ..db.telemetry_repo import ROW_SEQ, Row  # re-exported: the row `reading_row` builds
from ..limits import MAX_ABS_KW, MAX_ID_CHARS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Readings outside these years are refused: they would be typos or unset clocks.
_TS_MIN = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp())
_TS_MAX = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp())


def sane_kw(value: float) -> bool:
    """Finite and within ±`MAX_ABS_KW` (1e308 kW is a bug or an attack, not a reading)."""
    return math.isfinite(value) and abs(value) <= MAX_ABS_KW


def timestamp(seconds: int, nanos: int) -> datetime | None:
    """A protobuf Timestamp as an aware UTC datetime; None when out of the sane range."""
    if not _TS_MIN <= seconds < _TS_MAX or not 0 <= nanos < 1_000_000_000:
        return None
    return _cached_timestamp(seconds, nanos // 1000)


@lru_cache(maxsize=1 << 16)
def _cached_timestamp(seconds: int, micros: int) -> datetime:
    # Readings of one gateway tick share their timestamp, and building a datetime costs
    # more than the rest of a reading's conversion: memoise (bounded, pure).
    return _EPOCH + timedelta(seconds=seconds, microseconds=micros)


#: Why `reading_row` refused a reading (the ``reason`` of ``vpp_telemetry_rejected_total``).
RejectReason = Literal[
    "seq_out_of_range", "ts_missing", "ts_out_of_range", "power_not_finite", "power_out_of_range"
]
REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)

_SEQ_MAX = 2**63 - 1  # the bigint column; the wire field is uint64
_INT2_MAX = 32767
_isfinite = math.isfinite


def reading_row(r: pb.Telemetry, asset_id: str, received_at: datetime) -> Row | RejectReason:
    """A reading as a COPY row, or why it cannot be stored.

    Every value of a returned row fits its column: a mandatory field out of range refuses
    the reading; an optional one (soc, setpoint, setpoint id, envelope) out of range is
    dropped to None, and a status outside smallint reads as 0 (unspecified). Envelope
    (DESIGN.md §3a): a bound that is not finite or beyond ±`MAX_ABS_KW` is dropped, a
    negative ``min_stable_kw`` too (the wire says >= 0), and ``available_min_kw >
    available_max_kw`` drops both (neither side can be trusted); ``setpoint_ends_at``
    outside 2000..2200 is dropped. On the telemetry hot path (once per reading): one
    combined range test, the reason is worked out only for a refused reading. An unset
    ``ts`` (or ``setpoint_ends_at``) reads as 0 s, outside the sane range.
    """
    seq = r.seq
    ts_msg = r.ts
    seconds, nanos = ts_msg.seconds, ts_msg.nanos
    power = r.power_kw
    if not (
        0 < seq <= _SEQ_MAX
        and _TS_MIN <= seconds < _TS_MAX
        and 0 <= nanos < 1_000_000_000
        and -MAX_ABS_KW <= power <= MAX_ABS_KW  # false for NaN too
    ):
        return _reject_reason(r)
    ts = _cached_timestamp(seconds, nanos // 1000)
    has = r.HasField
    soc = r.soc_pct if has("soc_pct") else None
    if soc is not None and not (-1.0 <= soc <= 101.0):
        soc = None
    sp = r.setpoint_kw if has("setpoint_kw") else None
    if sp is not None and not -MAX_ABS_KW <= sp <= MAX_ABS_KW:
        sp = None
    lo = r.available_min_kw if has("available_min_kw") else None
    hi = r.available_max_kw if has("available_max_kw") else None
    # One chained test for the usual case (both sent and sane); the rest off the hot path.
    if (lo is not None or hi is not None) and (
        lo is None or hi is None or not -MAX_ABS_KW <= lo <= hi <= MAX_ABS_KW
    ):
        lo, hi = _available(lo, hi)
    stable = r.min_stable_kw if has("min_stable_kw") else None
    if stable is not None and not 0.0 <= stable <= MAX_ABS_KW:
        stable = None
    ends = None
    if has("setpoint_ends_at"):
        ends_msg = r.setpoint_ends_at
        e_seconds, e_nanos = ends_msg.seconds, ends_msg.nanos
        if _TS_MIN <= e_seconds < _TS_MAX and 0 <= e_nanos < 1_000_000_000:
            ends = _cached_timestamp(e_seconds, e_nanos // 1000)
    sp_id = r.setpoint_id
    status = r.status
    return (
        asset_id,
        seq,
        ts,
        received_at,
        power,
        soc,
        status if 0 <= status <= _INT2_MAX else 0,
        sp,
        # isprintable: no NUL (text refuses it) and no control or format characters.
        sp_id if sp_id and len(sp_id) <= MAX_ID_CHARS and sp_id.isprintable() else None,
        lo,
        hi,
        stable,
        ends,
    )


def _available(lo: float | None, hi: float | None) -> tuple[float | None, float | None]:
    """The live envelope's bounds as stored: each one not sane is dropped, and both when
    min > max (which side is wrong cannot be told)."""
    if lo is not None and not sane_kw(lo):
        lo = None
    if hi is not None and not sane_kw(hi):
        hi = None
    if lo is not None and hi is not None and lo > hi:
        return None, None
    return lo, hi


def _reject_reason(r: pb.Telemetry) -> RejectReason:
    """The first field of a refused reading that is out of range (off the hot path)."""
    if not 0 < r.seq <= _SEQ_MAX:
        return "seq_out_of_range"
    if not r.HasField("ts"):
        return "ts_missing"
    if not (_TS_MIN <= r.ts.seconds < _TS_MAX and 0 <= r.ts.nanos < 1_000_000_000):
        return "ts_out_of_range"
    if not _isfinite(r.power_kw):
        return "power_not_finite"
    return "power_out_of_range"


__all__ = [
    "REJECT_REASONS",
    "ROW_SEQ",
    "RejectReason",
    "Row",
    "reading_row",
    "sane_kw",
    "timestamp",
]
