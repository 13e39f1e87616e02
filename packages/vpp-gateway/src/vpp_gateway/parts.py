"""What the setpoint handler and the releaser act on: built once by the agent, shared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .clock import Clock
from .control import ControlTable
from .log import EventLog
from .model import Ack
from .runtime import AssetFleet
from .settings import GatewaySettings
from .state import StateStore


@dataclass(frozen=True, slots=True)
class ControlParts:
    """The fleet, its state and control table, and where acks go (``emit``: the session)."""

    settings: GatewaySettings
    fleet: AssetFleet
    store: StateStore
    control: ControlTable
    clock: Clock
    emit: Callable[[Ack], None]
    log: EventLog
