"""The assets a gateway serves: one `AssetRuntime` each, held in an `AssetFleet` by asset_id."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from vpp_protocol.sitefile import AssetConfig

from .clock import Clock
from .devices import DeviceAdapter, DeviceFactory, Limits
from .envelope import NONE, Envelope
from .model import Reading, Status

#: Window over which the per-asset telemetry rate is measured.
RATE_WINDOW_S = 60.0


@dataclass(slots=True, eq=False)
class AssetRuntime:
    """One asset: its device, limits, current setpoint, last reading and telemetry seq."""

    config: AssetConfig
    device: DeviceAdapter
    limits: Limits
    seq: int = 0
    setpoint_kw: float | None = None
    setpoint_id: str = ""
    applied_at: datetime | None = None
    #: End of control of the setpoint in force (DESIGN.md §3b); readings carry it.
    setpoint_ends_at: datetime | None = None
    last_reading: Reading | None = None
    #: False when the headend rejected this asset: its telemetry stays off the wire.
    accepted: bool = True
    reject_reason: str = ""
    _times: deque[float] = field(default_factory=deque)

    @property
    def asset_id(self) -> str:
        return self.config.asset_id

    @property
    def dispatchable(self) -> bool:
        return self.config.dispatchable

    @property
    def online(self) -> bool:
        """Reachable and not in fault, judged by the last reading."""
        r = self.last_reading
        return r is not None and r.status not in (Status.OFFLINE, Status.FAULT)

    @property
    def envelope(self) -> Envelope:
        """The live envelope of the last reading; nothing known before the first one."""
        r = self.last_reading
        if r is None:
            return NONE
        return Envelope(r.available_min_kw, r.available_max_kw, r.min_stable_kw)

    @property
    def min_stable_kw(self) -> float | None:
        """Minimum stable load the last reading reported, else the site file's; None: continuous."""
        stable = self.envelope.min_stable_kw or self.config.min_stable_kw
        return stable if stable > 0 else None

    def note_applied(
        self, power_kw: float, setpoint_id: str, at: datetime, ends_at: datetime | None = None
    ) -> None:
        """The device confirmed ``power_kw`` for ``setpoint_id``; readings carry it from now."""
        self.setpoint_kw = power_kw
        self.setpoint_id = setpoint_id
        self.applied_at = at
        self.setpoint_ends_at = ends_at

    def note_released(self) -> None:
        """No setpoint is in force any more (released to its fallback); readings show it now."""
        self.setpoint_kw = None
        self.setpoint_id = ""
        self.setpoint_ends_at = None

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def note_reading(self, reading: Reading, mono: float) -> None:
        self.last_reading = reading
        self._times.append(mono)
        while self._times and self._times[0] < mono - RATE_WINDOW_S:
            self._times.popleft()

    def rate_per_min(self, mono: float) -> float:
        """Readings taken in the last minute."""
        return float(sum(1 for t in self._times if t >= mono - RATE_WINDOW_S))


def effective_limits(config: AssetConfig, device: DeviceAdapter) -> Limits:
    """The site file's bounds narrowed by what the device reports."""
    lo, hi = config.bounds
    return Limits(lo, hi).intersect(device.limits)


class AssetFleet:
    """The assets of one gateway by asset_id (legacy mode: a fleet of one)."""

    def __init__(self, assets: list[AssetRuntime], *, legacy: bool = False) -> None:
        if legacy and len(assets) != 1:
            raise ValueError("a legacy fleet holds exactly one asset")
        self._assets = {a.asset_id: a for a in assets}
        self.legacy = legacy

    @classmethod
    def build(
        cls,
        configs: tuple[AssetConfig, ...],
        factory: DeviceFactory,
        clock: Clock,
        seed: int,
        seqs: Mapping[str, int],
        *,
        legacy: bool = False,
    ) -> AssetFleet:
        """Runtimes for ``configs`` with devices from ``factory`` and seqs restored from disk."""
        runtimes = []
        for config in configs:
            device = factory(config, clock, seed)
            runtimes.append(
                AssetRuntime(
                    config,
                    device,
                    effective_limits(config, device),
                    seq=seqs.get(config.asset_id, 0),
                )
            )
        return cls(runtimes, legacy=legacy)

    def __getitem__(self, asset_id: str) -> AssetRuntime:
        return self._assets[asset_id]

    def get(self, asset_id: str) -> AssetRuntime | None:
        return self._assets.get(asset_id)

    def __iter__(self) -> Iterator[AssetRuntime]:
        return iter(self._assets.values())

    def __len__(self) -> int:
        return len(self._assets)

    def only(self) -> AssetRuntime:
        """The single asset of a legacy fleet."""
        return next(iter(self._assets.values()))

    def seqs(self) -> dict[str, int]:
        return {a.asset_id: a.seq for a in self}
