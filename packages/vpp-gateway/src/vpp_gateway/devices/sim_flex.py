"""Simulated consumers and generic assets: EV charger, controllable load, other."""

from __future__ import annotations

from datetime import datetime, timedelta

from vpp_protocol.sitefile import AssetConfig

from ..clock import Clock
from ._sim_common import Measurement, SimDevice, SimParamError, Status, only
from .base import Limits


class SimEvCharger(SimDevice):
    """Charges a vehicle at full power (``min_kw``, negative) or at the setpoint.

    A vehicle is plugged in during the ``plugged_utc_h`` windows (``[[start_h, end_h], ...]``
    in UTC hours, a window may wrap past midnight, e.g. ``[[18, 7]]``; default: always),
    never with ``vehicle: false``. ``session_kwh`` ends a plug-in session (standby) once
    that much energy has been delivered; the next window starts a new one. With nothing
    plugged in the envelope is [0, 0] and the charger is in standby. Energy is counted at
    the power of the last reading or command until the next one.
    """

    kind_params = only({"vehicle", "session_kwh", "plugged_utc_h"})

    def __init__(self, asset: AssetConfig, clock: Clock, seed: int) -> None:
        super().__init__(asset, clock, seed)
        self._windows = self._plug_windows()
        self._session_kwh = self.number("session_kwh", 0.0, 0.0)
        self.delivered_kwh = 0.0
        self._session: object = None
        self._draw = 0.0
        self._last: datetime = self._clock.now()

    def _plug_windows(self) -> list[tuple[float, float]] | None:
        raw = self._params.get("plugged_utc_h")
        if raw is None:
            return None
        ok = isinstance(raw, list) and all(
            isinstance(w, list)
            and len(w) == 2
            and all(
                isinstance(h, int | float) and not isinstance(h, bool) and 0 <= h <= 24 for h in w
            )
            for w in raw
        )
        if not ok:
            raise SimParamError(
                f"asset {self.asset.asset_id}: simulator.plugged_utc_h must be a list of "
                f"[start_h, end_h] pairs of UTC hours in [0, 24], e.g. [[18, 7]]"
            )
        return [(float(a), float(b)) for a, b in raw]

    def _window_start(self) -> object:
        """Identifies the plug-in window in force now (None: nothing plugged in)."""
        if not self.param("vehicle", True, bool):
            return None
        if self._windows is None:
            return "always"
        now = self._clock.now()
        h = self.hours()
        for start, end in self._windows:
            if start <= end and start <= h < end:
                return (now.date(), start)
            if start > end and (h >= start or h < end):  # wraps past midnight
                day = now.date() if h >= start else now.date() - timedelta(days=1)
                return (day, start)
        return None

    def _plugged(self) -> bool:
        session = self._window_start()
        if session != self._session:  # a new vehicle: a new session
            self._session = session
            self.delivered_kwh = 0.0
        if session is None:
            return False
        return not (self._session_kwh and self.delivered_kwh >= self._session_kwh)

    def _advance(self) -> bool:
        """Count the energy delivered since the last call; True when a vehicle charges now."""
        now = self._clock.now()
        dt_h = max((now - self._last).total_seconds(), 0.0) / 3600
        self._last = now
        self.delivered_kwh += -self._draw * dt_h
        plugged = self._plugged()
        p = self.setpoint_kw if self.setpoint_kw is not None else self.limits.min_kw
        self._draw = min(p, 0.0) if plugged else 0.0
        return plugged

    def envelope(self) -> Limits:
        if self._advance():
            return self.limits
        return self.limits.intersect(Limits(0.0, 0.0))

    def command(self, power_kw: float) -> float:
        self._advance()  # the old setpoint held until now
        return super().command(power_kw)

    def drop(self) -> None:
        self._advance()  # the old setpoint held until now
        super().drop()
        self._advance()  # from now on it draws what the vehicle takes: full power

    def measure(self) -> Measurement:
        plugged = self._advance()
        return self.reading(self._draw, Status.OK if plugged else Status.STANDBY)


class SimLoad(SimDevice):
    """A controllable load: draws ``base_kw`` (default 60 % of capacity) plus seeded noise.

    A setpoint (≤ 0) makes it draw exactly that.
    """

    kind_params = only({"base_kw", "noise_kw"})

    def measure(self) -> Measurement:
        if self.setpoint_kw is not None:
            return self.reading(self.setpoint_kw, Status.OK)
        base = float(self.param("base_kw", 0.6 * self.limits.min_kw))
        noise = float(self.param("noise_kw", 0.02 * abs(base)))
        value = self.limits.clamp(base + noise * self._rng.gauss(0.0, 1.0))
        return self.reading(value, Status.OK)


class SimOther(SimDevice):
    """Any other asset: holds its setpoint exactly, 0 kW without one."""

    def measure(self) -> Measurement:
        return self.reading(self.setpoint_kw or 0.0, Status.OK)
