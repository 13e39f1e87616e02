"""Telemetry intake: a frame's readings authorized, validated and deduplicated into rows
to store and drops to count; `DropLog` turns the drops into metrics and log lines.

Part of the gRPC edge: it reads the upb readings as they came (the hot path; an object
per reading would cost more than the rest of a reading's conversion).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from vpp_protocol.upb import pb

from . import convert
from .errors import ProtocolViolationError
from .logs import log_event
from .metrics import Metrics
from .sessions import Session

# Its lines keep the logger name they had in the servicer (grpc_service.py).
log = logging.getLogger("vpp_headend.grpc_service")

#: Why a reading was dropped (the ``reason`` of ``vpp_telemetry_dropped_total``).
DropReason = Literal["foreign_asset", "no_asset", "invalid"]


@dataclass(frozen=True, slots=True)
class Drop:
    """A reading that is not stored, and why."""

    asset_id: str
    reason: DropReason
    rejected: convert.RejectReason | None = None  # for ``invalid``: the field at fault
    seq: int | None = None


_NO_DROPS: tuple[Drop, ...] = ()
#: A row's seq, as a literal index (typed, and no lookup per reading); checked at import.
_SEQ: Final = 1
if convert.ROW_SEQ != _SEQ:
    raise ImportError(f"telemetry rows moved seq to {convert.ROW_SEQ}; update intake._SEQ")


@dataclass(frozen=True, slots=True)
class Intake:
    """What became of one frame's readings."""

    rows: list[convert.Row]  # new readings, to store
    received: int  # readings in the frame
    drops: tuple[Drop, ...] = _NO_DROPS  # duplicates are neither rows nor drops


class TelemetryIntake:
    """Turns a session's readings into COPY rows (`convert.reading_row`).

    A reading no column can hold is the device's fault, not a protocol violation: it is
    a `Drop` and the rest of the frame is stored. Too many readings in one message is a
    violation (`ProtocolViolationError`). ``accept`` is the ingest's dedupe
    (`Ingest.accept`): False for a reading already taken.
    """

    def __init__(self, accept: Callable[[str, int], bool], max_readings: int) -> None:
        self._accept = accept
        self._max_readings = max_readings

    def batch(self, session: Session, readings: pb.TelemetryBatch, received_at: datetime) -> Intake:
        """A TelemetryBatch's readings, within the per-message limit."""
        items = readings.readings
        if len(items) > self._max_readings:
            raise ProtocolViolationError(
                f"TelemetryBatch of {len(items)} readings; the limit is {self._max_readings}"
            )
        return self.readings(session, items, received_at)

    def readings(
        self, session: Session, readings: Iterable[pb.Telemetry], received_at: datetime
    ) -> Intake:
        """Readings of ``session``: an asset it does not serve, or a value out of range,
        is dropped; a duplicate is skipped."""
        accept, assets = self._accept, session.assets
        default = session.default_asset_id
        rows: list[convert.Row] = []
        drops: list[Drop] | None = None
        n = 0
        for r in readings:
            n += 1
            asset_id = r.asset_id or default
            if asset_id not in assets:
                drop = Drop(asset_id, "foreign_asset" if asset_id else "no_asset")
            else:
                row = convert.reading_row(r, asset_id, received_at)
                if not isinstance(row, str):
                    if accept(asset_id, row[_SEQ]):
                        rows.append(row)
                    continue
                drop = Drop(asset_id, "invalid", row, r.seq)
            if drops is None:
                drops = []
            drops.append(drop)
        return Intake(rows, n, tuple(drops) if drops else _NO_DROPS)


class DropLog:
    """Counts dropped readings and logs the first of each reason per session only (a
    broken device repeats its fault every reading, and would flood the log)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # Reasons already logged per session; gone with the session.
        self._logged: weakref.WeakKeyDictionary[Session, set[str]] = weakref.WeakKeyDictionary()

    def record(self, session: Session, drops: Iterable[Drop]) -> None:
        """Count each drop (``vpp_telemetry_dropped_total{reason}``, and
        ``vpp_telemetry_rejected_total{reason}`` for an invalid value) and log the new."""
        dropped, rejected = self._metrics.telemetry_dropped, self._metrics.telemetry_rejected
        for d in drops:
            dropped.labels(d.reason).inc()
            if d.rejected is not None:
                rejected.labels(d.rejected).inc()
            why = d.rejected or d.reason
            logged = self._logged.setdefault(session, set())
            if why in logged:
                continue
            logged.add(why)
            log_event(
                log,
                "telemetry_dropped",
                level=logging.WARNING,
                site_id=session.site_id,
                asset_id=d.asset_id[:64] or None,
                reason=why,
                seq=d.seq,
                session_id=session.session_id,
                detail="further drops for this reason on this session are counted, not logged",
            )


__all__ = ["Drop", "DropLog", "DropReason", "Intake", "TelemetryIntake"]
