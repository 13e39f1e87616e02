"""Why an asset took less than asked: a `Limited` (wire ``LimitReason`` + a detail) per case.

From the split (``vpp_split`` says which limit: static bound, live envelope or minimum
stable load; the asset's kind says what the envelope means: sun, state of charge, a plugged-in
vehicle), or from the device (it refused, did not answer, or set something else).
"""

from __future__ import annotations

from vpp_split import Limit

from .model import Limited, LimitReason
from .runtime import AssetRuntime

#: Reasons that come from the device itself (it takes no further share of a setpoint).
DEVICE_REASONS = frozenset(
    {LimitReason.DEVICE_FAULT, LimitReason.DEVICE_TIMEOUT, LimitReason.DEVICE_REDUCED}
)
#: Half a step of the split's 1 W grid (and the float noise of a sum): closer than this
#: counts as the same power.
TOLERANCE_KW = 0.0005 + 1e-9


def num(x: float) -> str:
    """A power for people: at most three decimals, no trailing zeros, never ``-0``."""
    text = f"{x:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def envelope_limit(asset: AssetRuntime, up: bool) -> Limited:
    """The live envelope stopped ``asset`` raising (``up``) or lowering its power."""
    env = asset.envelope
    edge = env.max_kw if up else env.min_kw
    edge_kw = num(edge or 0.0)
    if asset.config.kind == "bess":
        r = asset.last_reading
        soc = f"soc {r.soc_pct:.0f} %" if r is not None and r.soc_pct is not None else "soc"
        can = f"can discharge {edge_kw} kW" if up else f"can charge {num(-(edge or 0.0))} kW"
        return Limited(LimitReason.STATE_OF_CHARGE, f"{soc}: {can}")
    if asset.config.kind == "pv" and up and not edge:
        return Limited(LimitReason.AVAILABLE_POWER, "no sun: available 0 kW")
    if asset.config.kind == "ev_charger" and env.min_kw == env.max_kw == 0:
        return Limited(LimitReason.AVAILABLE_POWER, "no vehicle plugged in: available 0 kW")
    side = "available" if up else "available down to"
    return Limited(LimitReason.AVAILABLE_POWER, f"{side} {edge_kw} kW")


def split_limit(asset: AssetRuntime, limit: Limit, up: bool, applied_kw: float) -> Limited:
    """What `vpp_split`'s ``limited_by`` reason means for this asset, raising (``up``) or not."""
    if limit == "min_stable":
        stable = num(asset.min_stable_kw or 0.0)
        if abs(applied_kw) <= TOLERANCE_KW:
            return Limited(LimitReason.MIN_STABLE_LOAD, f"off: runs only at {stable} kW or more")
        return Limited(LimitReason.MIN_STABLE_LOAD, f"at its minimum stable load {stable} kW")
    if limit == "envelope":
        return envelope_limit(asset, up)
    bound = asset.limits.max_kw if up else asset.limits.min_kw
    return Limited(LimitReason.LIMITS, f"at {'max_kw' if up else 'min_kw'} {num(bound)}")


def device_limit(asset: AssetRuntime, commanded_kw: float, applied_kw: float) -> Limited | None:
    """Why the device set ``applied_kw`` for a command of ``commanded_kw``; None if it did.

    A command beyond the last reading's envelope, or inside a semi-continuous asset's
    forbidden band, explains itself; any other difference is the device's own rule.
    """
    if abs(applied_kw - commanded_kw) <= TOLERANCE_KW:
        return None
    stable = asset.min_stable_kw
    if stable is not None and abs(commanded_kw) < stable - TOLERANCE_KW:
        return split_limit(asset, "min_stable", applied_kw < commanded_kw, applied_kw)
    env = asset.envelope
    up = applied_kw < commanded_kw  # it could not raise its power as far as asked
    edge = env.max_kw if up else env.min_kw
    if edge is not None and (commanded_kw > edge if up else commanded_kw < edge):
        return envelope_limit(asset, up)
    return Limited(
        LimitReason.DEVICE_REDUCED,
        f"device set {num(applied_kw)} kW instead of {num(commanded_kw)} kW",
    )


def fault(detail: str) -> Limited:
    return Limited(LimitReason.DEVICE_FAULT, detail)


def timeout(seconds: float) -> Limited:
    return Limited(LimitReason.DEVICE_TIMEOUT, f"device did not answer in {seconds:g} s")


__all__ = [
    "DEVICE_REASONS",
    "TOLERANCE_KW",
    "device_limit",
    "envelope_limit",
    "fault",
    "num",
    "split_limit",
    "timeout",
]
