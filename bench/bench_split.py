"""Micro-benchmark of ``vpp_split.split``: microseconds per call by fleet size and policy.

Run from the repository root:  python bench/bench_split.py  [--quick]

The fleet is a deterministic mix that keeps bounds binding: ~40 % batteries
(``[-cap, +cap]``), ~40 % PV curtailed below nameplate (``[0, avail]`` with avail < cap),
~20 % gensets with a minimum stable load (``[0.3 cap, cap]``), priorities 0-3.  Each call
cycles through requests of +70 %, +35 %, -20 % and +5 % of the fleet's upper capacity so the
water-filling crossing lands in different places (and some requests clamp most assets).
Timing: ``time.perf_counter`` around repeated calls; the best of several rounds is reported
(the minimum is the least noisy estimate of the cost on an idle machine).

The second table is a site with live envelopes: ~45 % batteries with an available range from
their state of charge, ~45 % PV with ``available_max_kw`` (a tenth at 0, i.e. night), 10 %
semi-continuous gensets (``min_stable_kw`` 30-40 % of capacity).  Its requests (+95 %, +70 %,
+35 %, -20 %, +5 % of the fleet's available maximum) include ones the continuous assets cannot
meet alone, so gensets are committed.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    from vpp_split import POLICIES, AssetShare, Policy, split
except ImportError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages/vpp-split/src"))
    from vpp_split import POLICIES, AssetShare, Policy, split

SIZES = (10, 100, 1_000, 10_000)
REQUEST_FRACTIONS = (0.70, 0.35, -0.20, 0.05)
LIVE_FRACTIONS = (0.95, 0.70, 0.35, -0.20, 0.05)


def fleet(n: int, seed: int = 2024) -> list[AssetShare]:
    """A reproducible mixed fleet of *n* assets."""
    rnd = random.Random(seed)
    assets = []
    for i in range(n):
        kind = rnd.random()
        priority = rnd.randint(0, 3)
        if kind < 0.4:
            cap = rnd.choice((5.0, 10.0, 13.5, 250.0))
            assets.append(AssetShare(f"bat-{i:05d}", cap, -cap, cap, priority=priority))
        elif kind < 0.8:
            cap = round(rnd.uniform(3.0, 12.0), 1)
            avail = round(cap * rnd.uniform(0.2, 1.0), 3)
            assets.append(AssetShare(f"pv-{i:05d}", cap, max_kw=avail, priority=priority))
        else:
            cap = rnd.choice((50.0, 100.0))
            assets.append(AssetShare(f"gen-{i:05d}", cap, min_kw=0.3 * cap, priority=priority))
    rnd.shuffle(assets)
    return assets


def live_fleet(n: int, seed: int = 2025) -> list[AssetShare]:
    """A reproducible site of *n* assets with live envelopes; every tenth is a genset."""
    rnd = random.Random(seed)
    assets = []
    for i in range(n):
        priority = rnd.randint(0, 3)
        if i % 10 == 9:
            cap = rnd.choice((50.0, 100.0, 200.0))
            stable = round(cap * rnd.uniform(0.3, 0.4), 1)
            assets.append(AssetShare(f"gen-{i:05d}", cap, min_stable_kw=stable, priority=priority))
        elif rnd.random() < 0.5:
            cap = rnd.choice((5.0, 10.0, 13.5, 250.0))
            soc = rnd.random()  # full -> can discharge fully, charge little
            assets.append(
                AssetShare(
                    f"bat-{i:05d}",
                    cap,
                    -cap,
                    cap,
                    priority=priority,
                    available_min_kw=-round(cap * min(1.0, 1.2 - soc), 3),
                    available_max_kw=round(cap * min(1.0, soc + 0.2), 3),
                )
            )
        else:
            cap = round(rnd.uniform(3.0, 12.0), 1)
            sun = 0.0 if rnd.random() < 0.1 else round(cap * rnd.uniform(0.2, 1.0), 3)
            assets.append(AssetShare(f"pv-{i:05d}", cap, priority=priority, available_max_kw=sun))
    rnd.shuffle(assets)
    return assets


def time_per_call(
    assets: list[AssetShare],
    policy: Policy,
    budget_s: float,
    fractions: tuple[float, ...] = REQUEST_FRACTIONS,
) -> float:
    """Best-of-rounds microseconds per call, spending about *budget_s* seconds."""
    upper = sum(a.effective_bounds_kw[1] for a in assets)
    totals = [round(f * upper, 3) for f in fractions]
    # Calibrate so that one round lasts ~budget/5 seconds, then take the best of 5 rounds.
    start = time.perf_counter()
    split(totals[0], assets, policy=policy)
    once = max(time.perf_counter() - start, 1e-7)
    reps = max(len(totals), int(budget_s / 5 / once) // len(totals) * len(totals))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for r in range(reps):
            split(totals[r % len(totals)], assets, policy=policy)
        best = min(best, (time.perf_counter() - start) / reps)
    return best * 1e6


def table(
    title: str, make: Callable[[int], list[AssetShare]], fractions: tuple[float, ...]
) -> None:
    budget = 0.25 if "--quick" in sys.argv else 1.0
    header = f"{'assets':>8} | " + " | ".join(f"{p:>12}" for p in POLICIES) + " | us/asset (prop)"
    print(f"vpp_split.split, {title}, microseconds per call (best of 5 rounds)")
    print(header)
    print("-" * len(header))
    for n in SIZES:
        assets = make(n)
        cells = [time_per_call(assets, policy, budget, fractions) for policy in POLICIES]
        row = " | ".join(f"{c:>12,.1f}" for c in cells)
        print(f"{n:>8,} | {row} | {cells[0] / n:>15.3f}")


def per_request(n: int, budget_s: float) -> None:
    """Each live request on its own: microseconds per call and gensets committed."""
    assets = live_fleet(n)
    upper = sum(a.effective_bounds_kw[1] for a in assets)
    print(f"live envelopes, {n:,} assets, proportional, per request:")
    for f in LIVE_FRACTIONS:
        total = round(f * upper, 3)
        result = split(total, assets)
        us = time_per_call(assets, "proportional", budget_s / len(LIVE_FRACTIONS), (f,))
        on = sum(result.committed.values())
        print(
            f"  {f:+4.0%} of max: {us:>8,.1f} us, gensets on {on:>3}/{len(result.committed)},"
            f" shortfall {result.shortfall_kw:g} kW"
        )


def main() -> None:
    table("static bounds", fleet, REQUEST_FRACTIONS)
    print()
    table("live envelopes, 10 % semi-continuous", live_fleet, LIVE_FRACTIONS)
    print()
    per_request(1_000, 0.25 if "--quick" in sys.argv else 1.0)


if __name__ == "__main__":
    main()
