"""Releasing one asset when a setpoint's control ends: to its fallback (DESIGN.md §3b).

The site file's ``fallback_kw`` (clamped to the asset's limits) is applied through the
device when it is set. Otherwise the device goes back to its own behaviour: its
`ReleasableDevice.release` when the adapter has one, else the kind's default through
``apply`` — PV ``max_kw`` (uncurtailed), BESS 0 (idle), genset 0 (off), EV charger and
load ``min_kw`` (unrestricted consumption), anything else 0.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from .delivery import command
from .devices import DeviceError, ReleasableDevice
from .limits import fault, num, timeout
from .model import Limited
from .runtime import AssetRuntime


@dataclass(frozen=True, slots=True)
class Released:
    """One asset's release: did the device confirm it, at which fallback power, or why not.

    ``applied_kw``: the power the device set for its ``fallback_kw``; None when it went back
    to its own behaviour (or did not confirm).
    """

    ok: bool
    applied_kw: float | None = None
    limit: Limited | None = None


def kind_default(asset: AssetRuntime) -> float:
    """The power that stands for "the device's own behaviour" of an adapter without release."""
    lo, hi = asset.limits.min_kw, asset.limits.max_kw
    kind = asset.config.kind
    if kind == "pv":
        target = hi
    elif kind in ("ev_charger", "load"):
        target = lo
    else:
        target = 0.0
    return asset.limits.clamp(target)


async def release_asset(asset: AssetRuntime, timeout_s: float) -> Released:
    """Release ``asset`` to its fallback; a device slower than ``timeout_s`` is abandoned."""
    fallback = asset.config.fallback_kw
    if fallback is not None:
        out = await command(asset, asset.limits.clamp(fallback), timeout_s)
        return Released(out.applied_kw is not None, out.applied_kw, out.limit)
    device = asset.device
    if isinstance(device, ReleasableDevice):
        try:
            await asyncio.wait_for(device.release(), timeout_s)
        except TimeoutError:
            return Released(False, limit=timeout(timeout_s))
        except DeviceError as exc:
            return Released(False, limit=fault(f"device error: {exc}"))
        except Exception as exc:  # a broken adapter fails its own asset, not the others
            detail = f"device adapter error: {type(exc).__name__}: {exc}"
            return Released(False, limit=fault(detail))
        return Released(True)
    target = kind_default(asset)
    if not math.isfinite(target):
        detail = f"no finite default for a {asset.config.kind} ({num(target)}): set fallback_kw"
        return Released(False, limit=fault(detail))
    out = await command(asset, target, timeout_s)
    return Released(out.applied_kw is not None, None, out.limit)


__all__ = ["Released", "kind_default", "release_asset"]
