"""Input limits on what a gateway may send (docs/security.md has the table).

Anything past a limit gets a clear refusal: a protocol error that closes the stream
(oversized message, too many assets or readings in one message) or a per-item rejection
(an absurd number in one descriptor or reading), never unbounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest |power| in kW accepted anywhere (10 GW: no single DER comes close).
MAX_ABS_KW = 1e7
#: Largest energy in kWh accepted in a descriptor (10 GWh).
MAX_ENERGY_KWH = 1e7
#: Ids (site, asset, group) are [A-Za-z0-9._-]{1,64}.
MAX_ID_CHARS = 64
#: A per-asset credential as presented in Register.
MAX_CREDENTIAL_CHARS = 256
#: Free text kept from a gateway (ack reasons); longer text is cut.
MAX_REASON_CHARS = 500
MAX_AGENT_VERSION_CHARS = 200


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-stream limits, from `Settings`."""

    max_message_bytes: int = 4 * 1024 * 1024
    max_assets_per_register: int = 1_000
    max_readings_per_message: int = 10_000


__all__ = [
    "MAX_ABS_KW",
    "MAX_AGENT_VERSION_CHARS",
    "MAX_CREDENTIAL_CHARS",
    "MAX_ENERGY_KWH",
    "MAX_ID_CHARS",
    "MAX_REASON_CHARS",
    "Limits",
]
