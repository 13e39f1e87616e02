"""The device adapter interface: what the runtime needs from any device driver.

A vendor driver (Modbus/SunSpec, a cloud API...) implements `DeviceAdapter` and is
handed to the gateway through a `DeviceFactory`; the runtime never changes for it. It may
also implement `ReleasableDevice` (optional): how the device goes back to its own
behaviour when a setpoint's control ends and the site file gives no ``fallback_kw``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ..model import Status


class DeviceError(Exception):
    """A device could not be read or commanded (timeout, bus error, fault); the message says why."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Power range a device accepts, in kW (signed: + export/discharge, − import/charge)."""

    min_kw: float
    max_kw: float

    def __post_init__(self) -> None:
        if math.isnan(self.min_kw) or math.isnan(self.max_kw) or self.min_kw > self.max_kw:
            raise ValueError(f"invalid limits [{self.min_kw}, {self.max_kw}]")

    def clamp(self, power_kw: float) -> float:
        """``power_kw`` moved into [min_kw, max_kw]."""
        return min(max(power_kw, self.min_kw), self.max_kw)

    def intersect(self, other: Limits) -> Limits:
        """The range both allow; if they do not overlap, the nearer bound of ``other``."""
        lo, hi = max(self.min_kw, other.min_kw), min(self.max_kw, other.max_kw)
        if lo > hi:
            return Limits(other.clamp(lo), other.clamp(lo))
        return Limits(lo, hi)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One reading taken from a device, with its live operating envelope (DESIGN.md §3a).

    ``available_min_kw`` / ``available_max_kw``: the power range the device can be set to
    now (PV: up to what the sun gives; a battery: what its state of charge allows; an EV
    charger with nothing plugged in: 0). ``min_stable_kw``: a semi-continuous device is
    off (0) or within [min_stable_kw, available_max_kw]. None = the device cannot tell; the
    gateway then reports the asset's static limits and the site file's ``min_stable_kw``.
    """

    power_kw: float
    status: Status = Status.OK
    soc_pct: float | None = None
    available_min_kw: float | None = None
    available_max_kw: float | None = None
    min_stable_kw: float | None = None


@runtime_checkable
class DeviceAdapter(Protocol):
    """A device the gateway can read and command. All methods may be slow (bus I/O)."""

    @property
    def limits(self) -> Limits:
        """The power range the device accepts right now."""
        ...

    async def read(self) -> Measurement:
        """Take a measurement, with the envelope when the device can tell it.

        Raise `DeviceError` when the device cannot be read.
        """
        ...

    async def apply(self, power_kw: float) -> float:
        """Command ``power_kw`` (already within `limits`); return the power actually set.

        The returned value may differ when the device rounds, has rules of its own (a
        genset's minimum stable load) or cannot do that much now (outside its live
        envelope); raise `DeviceError` when it cannot be applied.
        """
        ...


@runtime_checkable
class ReleasableDevice(Protocol):
    """Optional: a device that can drop its setpoint and go back to its own behaviour.

    The gateway calls `release` when the control of a setpoint ends (its duration is over,
    the headend released it, or the fail-safe) and the asset has no ``fallback_kw`` in the
    site file: a PV inverter runs uncurtailed, a battery idles at 0, a genset stops, an EV
    charger or a load draws what it wants. An adapter without `release` gets the kind's
    default through `DeviceAdapter.apply` instead: PV ``max_kw``, BESS 0, genset 0, EV
    charger and load ``min_kw`` (unrestricted consumption), anything else 0.
    """

    async def release(self) -> None:
        """Drop any setpoint; raise `DeviceError` when the device cannot be released."""
        ...


#: Builds the adapter of one asset. ``seed`` makes simulated devices repeatable.
DeviceFactory = Callable[[AssetConfig, Clock, int], DeviceAdapter]
