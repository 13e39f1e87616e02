"""A gateway's SetpointAck taken in: converted, handed to dispatch (`AckRetry.handle`),
and whatever goes wrong with it kept off the stream and the site's telemetry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from vpp_protocol.upb import pb

from . import convert
from .domain import Ack
from .errors import HeadendError, ProtocolViolationError
from .logs import log_event
from .metrics import Metrics
from .sessions import Session

# Its lines keep the logger name they had in the servicer (grpc_service.py).
log = logging.getLogger("vpp_headend.grpc_service")


class AckIntake:
    """Takes a session's acks; ``handle`` applies one (or queues it for the database)."""

    def __init__(
        self, handle: Callable[[Session, Ack], Awaitable[object]], metrics: Metrics
    ) -> None:
        self._handle = handle
        self._metrics = metrics

    async def take(self, session: Session, msg: pb.SetpointAck) -> None:
        """Apply ``msg``; a bad ack is logged and ignored: closing would not make the
        gateway's report any better, and it would drop the telemetry flowing alongside."""
        try:
            ack = convert.ack_from_pb(msg, session.default_asset_id)
        except ProtocolViolationError as exc:
            self._metrics.protocol_errors.inc()
            self._metrics.acks_ignored.labels("invalid").inc()
            log_event(
                log,
                "ack_invalid",
                level=logging.WARNING,
                site_id=session.site_id,
                detail=exc.detail,
            )
            return
        # While the database is slow, the gateway's frames wait behind this ack: that is
        # not the gateway's silence (the sender would close the stream for it).
        session.backpressured = True
        try:
            # A database that cannot take the ack now (down, a killed connection) is not
            # the gateway's fault: the ack waits in `AckRetry` and the stream goes on.
            await self._handle(session, ack)
        except HeadendError as exc:
            log_event(log, "ack_failed", level=logging.WARNING, detail=exc.detail)
        except Exception:
            # A bug, or a value the database refused: this ack is lost (and logged with
            # its traceback), the stream and the site's telemetry are not.
            self._metrics.acks_ignored.labels("error").inc()
            log.exception(
                "event=ack_dropped site_id=%s setpoint_id=%s", session.site_id, ack.setpoint_id
            )
        finally:
            session.backpressured = False


__all__ = ["AckIntake"]
