"""The dispatch lifecycle (DESIGN.md §4): create, route, deliver, ack, supersede, expire,
and measure what was delivered.

A dispatch has one *delivery* per site it goes to (one Setpoint per site session; the
setpoint id is the dispatch id) and per-asset *targets* with allocations and ack
states. Deliveries move forward only (`transitions`); the dispatch's own state is
derived from them. Every transition is stored with its time in ``dispatch_events``.

Delivery is at-least-once: a delivery ``sent`` or ``received`` whose session ended
before the gateway's final ack is sent again on the next connect of that site (the
gateway's journal answers a repeat without applying it twice); the sweeper ends what
never gets its final ack (docs/runbook.md §6).

Time in force (DESIGN.md §3b): an applied setpoint stays in force until the gateway
reports its control ended (RELEASED: its duration → ``completed``, the fail-safe →
``released``); the operator's cancel (`cancel`) ends pending deliveries at once and sends
the others a Release (`release`), whose RELEASED ack makes them ``cancelled``.
"""

from .acks import AckApplied, AckIgnored, AckOutcome
from .deps import DispatchDeps, DispatchTiming
from .service import DispatchService

__all__ = [
    "AckApplied",
    "AckIgnored",
    "AckOutcome",
    "DispatchDeps",
    "DispatchService",
    "DispatchTiming",
]
