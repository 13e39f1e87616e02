"""Device adapters: the `DeviceAdapter` interface and the bundled simulated devices."""

from __future__ import annotations

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ._sim_common import SimDevice, SimParamError
from .base import (
    DeviceAdapter,
    DeviceError,
    DeviceFactory,
    Limits,
    Measurement,
    ReleasableDevice,
)
from .sim_bess import SimBess
from .sim_flex import SimEvCharger, SimLoad, SimOther
from .sim_genset import SimGenset
from .sim_meter import SimMeter
from .sim_pv import SimPV

SIMULATORS: dict[str, type[SimDevice]] = {
    "pv": SimPV,
    "bess": SimBess,
    "meter": SimMeter,
    "genset": SimGenset,
    "ev_charger": SimEvCharger,
    "load": SimLoad,
    "other": SimOther,
}


def simulated_device(asset: AssetConfig, clock: Clock, seed: int) -> DeviceAdapter:
    """The bundled simulator for ``asset.kind`` (a `DeviceFactory`)."""
    return SIMULATORS[asset.kind](asset, clock, seed)


__all__ = [
    "SIMULATORS",
    "DeviceAdapter",
    "DeviceError",
    "DeviceFactory",
    "Limits",
    "Measurement",
    "ReleasableDevice",
    "SimBess",
    "SimDevice",
    "SimEvCharger",
    "SimGenset",
    "SimLoad",
    "SimMeter",
    "SimOther",
    "SimPV",
    "SimParamError",
    "simulated_device",
]
