"""What the dispatch lifecycle runs on (`DispatchDeps`, built once by the headend) and
its durations (`DispatchTiming`, from `Settings`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncEngine

from ..clock import Clock, utc_now
from ..db.engine import reader
from ..domain import ReleaseCommand, SetpointCommand
from ..metrics import Metrics
from ..registry import Registry
from ..sessions import Session, SessionRegistry
from ..settings import Settings
from .planning import Envelopes

#: Puts a setpoint or a release on a session's stream (False when the session is closing).
Push = Callable[[Session, SetpointCommand | ReleaseCommand], object]


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchTiming:
    """The service's durations, in seconds (from `Settings`)."""

    ack_grace_s: float
    sweep_interval_s: float
    envelope_max_age_s: float
    delivery_window_s: float
    delivery_settle_s: float

    @classmethod
    def from_settings(cls, s: Settings) -> DispatchTiming:
        return cls(
            ack_grace_s=s.ack_grace_s,
            sweep_interval_s=s.sweep_interval_s,
            envelope_max_age_s=s.envelope_max_age_s,
            delivery_window_s=s.delivery_window_s,
            delivery_settle_s=s.delivery_settle_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchDeps:
    """The database, the registries, the metrics and the transport the lifecycle's parts
    share, with the clock and id generator tests replace."""

    engine: AsyncEngine
    registry: Registry
    sessions: SessionRegistry
    metrics: Metrics
    push: Push
    envelopes: Envelopes
    clock: Clock = utc_now
    new_id: Callable[[], UUID] = uuid4
    #: ``engine`` in autocommit, made once: reads cost no BEGIN/ROLLBACK.
    read: AsyncEngine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read", reader(self.engine))


__all__ = ["DispatchDeps", "DispatchTiming", "Push"]
