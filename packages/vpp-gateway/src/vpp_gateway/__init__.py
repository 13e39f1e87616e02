"""VPP Edge Gateway on-site agent.

`Agent` runs one site: `AssetFleet` of `AssetRuntime`, device adapters (`DeviceAdapter`;
simulated devices bundled), the telemetry mux with its on-disk spool, setpoint handling
with the `vpp_split` group split, the control in force (duration, release, fail-safe),
and the one outbound stream to the headend.
"""

from ._version import __version__
from .agent import Agent
from .clock import Clock, ManualClock, SystemClock
from .devices import (
    DeviceAdapter,
    DeviceError,
    DeviceFactory,
    Limits,
    Measurement,
    ReleasableDevice,
)
from .model import (
    Ack,
    AckState,
    Allocation,
    Reading,
    ReleaseCause,
    ReleaseCommand,
    SetpointCommand,
    Status,
)
from .runtime import AssetFleet, AssetRuntime
from .settings import GatewaySettings, SettingsError, from_site_file

__all__ = [
    "Ack",
    "AckState",
    "Agent",
    "Allocation",
    "AssetFleet",
    "AssetRuntime",
    "Clock",
    "DeviceAdapter",
    "DeviceError",
    "DeviceFactory",
    "GatewaySettings",
    "Limits",
    "ManualClock",
    "Measurement",
    "Reading",
    "ReleasableDevice",
    "ReleaseCause",
    "ReleaseCommand",
    "SetpointCommand",
    "SettingsError",
    "Status",
    "SystemClock",
    "__version__",
    "from_site_file",
]
