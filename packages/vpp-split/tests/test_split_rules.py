"""Property tests for the rules of ``vpp_split.split``.

Every rule is checked against an independent, deliberately naive reference written here with
``fractions.Fraction`` and ``decimal.Decimal``: grid snapping by scanning, water-filling by
evaluating ``S(lam)`` exactly at every breakpoint and interpolating, largest remainder by a
plain sort, priority fill by a plain loop.  It shares no code with the package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vpp_split import POLICIES, AssetShare, Policy, SplitResult, split

INF = math.inf


def kwargs(field: str, value: float) -> dict[str, Any]:
    return {field: value}


# ----------------------------------------------------------------------------- reference ---


def grid_value(k: int, step: float) -> float:
    """k * step as the float nearest the exact decimal product."""
    return float(Decimal(k) * Decimal(repr(step)))


def exact_step(step: float) -> Fraction:
    return Fraction(repr(step))


def ref_low(x: float, step: float) -> int | None:
    """Smallest k with grid_value(k) >= x, by scanning up from below."""
    if x == -INF:
        return None
    k = math.ceil(Fraction(x) / exact_step(step)) - 2
    while grid_value(k, step) < x:
        k += 1
    return k


def ref_high(x: float, step: float) -> int | None:
    """Largest k with grid_value(k) <= x, by scanning down from above."""
    if x == INF:
        return None
    k = math.floor(Fraction(x) / exact_step(step)) + 2
    while grid_value(k, step) > x:
        k -= 1
    return k


def ref_bounds_kw(a: AssetShare) -> tuple[float, float]:
    low, high = (-INF, INF) if a.capacity_kw is None else (0.0, float(a.capacity_kw))
    return (
        low if a.min_kw is None else float(a.min_kw),
        high if a.max_kw is None else float(a.max_kw),
    )


def clamp(x: Fraction, low: int | None, high: int | None) -> Fraction:
    if low is not None and x < low:
        return Fraction(low)
    if high is not None and x > high:
        return Fraction(high)
    return x


def ref_waterfill(
    low: Sequence[int | None], high: Sequence[int | None], w: Sequence[Fraction], target: int
) -> list[Fraction]:
    """Exact ideal: clamp(lam * w_i, lo_i, hi_i) summing to target (assumed feasible)."""

    def total(lam: Fraction) -> Fraction:
        return sum(
            (clamp(lam * wi, lo, hi) for wi, lo, hi in zip(w, low, high, strict=True)), Fraction(0)
        )

    points = sorted(
        {Fraction(b) / wi for wi, b in zip(w, low, strict=True) if b is not None}
        | {Fraction(b) / wi for wi, b in zip(w, high, strict=True) if b is not None}
    )
    if not points:
        lam = Fraction(target) / sum(w)
    elif target <= total(points[0]):
        slope = sum(wi for wi, lo in zip(w, low, strict=True) if lo is None)
        lam = points[0] - (total(points[0]) - target) / slope if slope else points[0]
    elif target >= total(points[-1]):
        slope = sum(wi for wi, hi in zip(w, high, strict=True) if hi is None)
        lam = points[-1] + (target - total(points[-1])) / slope if slope else points[-1]
    else:  # bisect for adjacent points with total(a) < target <= total(b), then interpolate
        i, j = 0, len(points) - 1
        while j - i > 1:
            mid = (i + j) // 2
            i, j = (mid, j) if total(points[mid]) < target else (i, mid)
        a, b = points[i], points[j]
        sa, sb = total(a), total(b)
        lam = a + (target - sa) * (b - a) / (sb - sa)
    ideal = [clamp(lam * wi, lo, hi) for wi, lo, hi in zip(w, low, high, strict=True)]
    assert sum(ideal) == target
    return ideal


def ref_largest_remainder(ids: Sequence[str], ideal: Sequence[Fraction], target: int) -> list[int]:
    floors = [math.floor(x) for x in ideal]
    left = target - sum(floors)
    by_fraction = sorted(range(len(ids)), key=lambda i: (-(ideal[i] - floors[i]), ids[i]))
    for i in by_fraction[:left]:
        floors[i] += 1
    return floors


@dataclass(frozen=True)
class Reference:
    ids: list[str]
    low: list[int | None]
    high: list[int | None]
    target: int
    feasible: bool
    policy: Policy
    steps: list[int]
    ideal: list[Fraction] | None  # the unrounded water-filling (None for priority)


def reference(
    total_kw: float, assets: Sequence[AssetShare], step: float, policy: Policy
) -> Reference:
    online = sorted((a for a in assets if a.online), key=lambda a: a.asset_id)
    ids = [a.asset_id for a in online]
    low = [ref_low(ref_bounds_kw(a)[0], step) for a in online]
    high = [ref_high(ref_bounds_kw(a)[1], step) for a in online]
    target = round(total_kw / step)
    used: Policy = policy
    if policy == "proportional" and any(not a.capacity_kw for a in online):
        used = "equal"
    min_sum = -INF if None in low else sum(x for x in low if x is not None)
    max_sum = INF if None in high else sum(x for x in high if x is not None)
    ideal: list[Fraction] | None = None
    if target <= min_sum:  # at == this is the only solution, for every policy
        steps = [x for x in low if x is not None]
    elif target >= max_sum:
        steps = [x for x in high if x is not None]
    elif used == "priority":
        steps = [int(clamp(Fraction(0), lo, hi)) for lo, hi in zip(low, high, strict=True)]
        left = target - sum(steps)
        for i in sorted(range(len(ids)), key=lambda i: (online[i].priority, ids[i])):
            bound = high[i] if left > 0 else low[i]
            room = left if bound is None else bound - steps[i]
            take = min(left, room) if left > 0 else max(left, room)
            steps[i] += take
            left -= take
    else:
        weights = [Fraction(1) if used == "equal" else Fraction(a.capacity_kw or 0) for a in online]
        ideal = ref_waterfill(low, high, weights, target)
        steps = ref_largest_remainder(ids, ideal, target)
    return Reference(ids, low, high, target, min_sum <= target <= max_sum, used, steps, ideal)


def steps_of(result: SplitResult) -> list[int]:
    return [round(v / result.step) for v in result.allocations.values()]


# ---------------------------------------------------------------------------- strategies ---

STEPS = st.sampled_from([0.001, 0.01, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
CAPACITY = st.one_of(
    st.none(),
    st.just(0.0),
    st.sampled_from([0.1, 0.3, 0.7, 1.1, 3.3, 13.5, 250.0]),
    st.integers(1, 500).map(float),
    st.floats(0.01, 500.0),
)
BOUND = st.one_of(
    st.none(),
    st.integers(-500, 500).map(float),
    st.sampled_from([0.3, -0.3, 0.7, -0.7, 0.1, 2.2]),
    st.floats(-500.0, 500.0),
)
IDS = st.text(alphabet="abcxyz", min_size=1, max_size=3)


@st.composite
def assets(draw: st.DrawFn, max_size: int = 8) -> list[AssetShare]:
    ids = draw(st.lists(IDS, max_size=max_size, unique=True))
    out = []
    for asset_id in ids:
        cap, low, high = draw(CAPACITY), draw(BOUND), draw(BOUND)
        default_low, default_high = (-INF, INF) if cap is None else (0.0, cap)
        eff_low = default_low if low is None else low
        eff_high = default_high if high is None else high
        if eff_low > eff_high:  # repair rather than discard: keep the drawn numbers if possible
            if low is not None and high is not None:
                low, high = high, low
            elif low is not None:
                low = None
            else:
                high = None
        out.append(
            AssetShare(
                asset_id,
                cap,
                low,
                high,
                online=draw(st.sampled_from([True, True, True, False])),
                priority=draw(st.integers(-2, 2)),
            )
        )
    return out


@st.composite
def scenarios(draw: st.DrawFn, max_size: int = 8) -> tuple[float, list[AssetShare], float, Policy]:
    fleet = draw(assets(max_size))
    step = draw(STEPS)
    for a in fleet:  # an online asset whose bounds hold no grid point is an input error
        if a.online:
            low, high = ref_bounds_kw(a)
            lo, hi = ref_low(low, step), ref_high(high, step)
            assume(lo is None or hi is None or lo <= hi)
    total = draw(st.one_of(st.integers(-3000, 3000).map(float), st.floats(-3000.0, 3000.0)))
    return total, fleet, step, draw(st.sampled_from(POLICIES))


CAPACITIES_THAT_REPEAT = st.sampled_from([5.0, 10.0, 13.5, 0.3, 7.3])


@st.composite
def fleets(draw: st.DrawFn) -> tuple[float, list[AssetShare], float, Policy]:
    """Larger fleets of a few asset types: long runs of tied breakpoints."""
    n = draw(st.integers(1, 60))
    out = []
    for i in range(n):
        cap = draw(CAPACITIES_THAT_REPEAT)
        kind = draw(st.sampled_from(["battery", "pv", "derated", "genset"]))
        low, high = {
            "battery": (-cap, cap),
            "pv": (None, None),
            "derated": (None, round(cap / 2, 1)),
            "genset": (round(cap / 3, 1), None),
        }[kind]
        out.append(AssetShare(f"{kind}-{i:03d}", cap, low, high, priority=i % 3))
    step = draw(st.sampled_from([0.001, 0.1, 1.0]))
    # A small genset has no grid point in [cap/3, cap] on a coarse step: make it offline.
    out = [
        a
        if ref_low(a.bounds_kw[0], step) <= ref_high(a.bounds_kw[1], step)  # type: ignore[operator]
        else AssetShare(a.asset_id, a.capacity_kw, a.min_kw, a.max_kw, online=False)
        for a in out
    ]
    upper = sum(a.bounds_kw[1] for a in out)
    total = draw(st.floats(-upper * 1.1, upper * 1.1))
    return total, out, step, draw(st.sampled_from(POLICIES))


RULES = settings(max_examples=150, deadline=None)


# --------------------------------------------------------------------------------- rules ---


@RULES
@given(scenarios(), st.data())
def test_rule1_any_permutation_gives_an_identical_result(
    scenario: tuple[float, list[AssetShare], float, Policy], data: st.DataObject
) -> None:
    total, fleet, step, policy = scenario
    shuffled = data.draw(st.permutations(fleet))
    first = split(total, fleet, step=step, policy=policy)
    second = split(total, shuffled, step=step, policy=policy)
    assert first == second
    assert list(first.allocations.items()) == list(second.allocations.items())
    assert list(first.allocations) == sorted(a.asset_id for a in fleet if a.online)


@RULES
@given(scenarios())
def test_rule2_every_value_is_a_whole_number_of_steps(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    result = split(total, fleet, step=step, policy=policy)
    ks = steps_of(result)
    assert list(result.allocations.values()) == [grid_value(k, step) for k in ks]
    target = round(total / step)
    assert result.requested_kw == grid_value(target, step)
    assert result.allocated_kw == grid_value(sum(ks), step)
    assert result.shortfall_kw == grid_value(target - sum(ks), step)


@RULES
@given(scenarios())
def test_rule2_rounding_is_largest_remainder_of_the_exact_ideal(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    result = split(total, fleet, step=step, policy=policy)
    ref = reference(total, fleet, step, policy)
    assert steps_of(result) == ref.steps
    assert result.policy == ref.policy


@RULES
@given(scenarios())
def test_rule3_exact_sum_when_feasible(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    result = split(total, fleet, step=step, policy=policy)
    ref = reference(total, fleet, step, policy)
    if ref.feasible:
        assert sum(steps_of(result)) == ref.target
        assert result.shortfall_kw == 0.0
    else:
        assert sum(steps_of(result)) != ref.target


@RULES
@given(scenarios())
def test_rule4_every_allocation_is_within_its_bounds(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    result = split(total, fleet, step=step, policy=policy)
    for a in fleet:
        if a.online:
            low, high = ref_bounds_kw(a)
            assert low <= result.allocations[a.asset_id] <= high


@RULES
@given(scenarios())
def test_rule5_within_one_step_of_the_exact_ideal(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    ref = reference(total, fleet, step, policy)
    assume(ref.ideal is not None)
    assert ref.ideal is not None
    for k, ideal in zip(
        steps_of(split(total, fleet, step=step, policy=policy)), ref.ideal, strict=True
    ):
        assert abs(k - ideal) < 1
        assert k in (math.floor(ideal), math.ceil(ideal))


@settings(max_examples=40, deadline=None)
@given(fleets())
def test_rules_hold_for_larger_fleets_with_tied_breakpoints(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    result = split(total, fleet, step=step, policy=policy)
    ref = reference(total, fleet, step, policy)
    assert steps_of(result) == ref.steps
    if ref.feasible:
        assert sum(ref.steps) == ref.target


@RULES
@given(assets(), STEPS, st.floats(1.0, 1000.0), st.booleans())
def test_rule6_infeasible_request_pins_everyone_in_its_direction(
    fleet: list[AssetShare], step: float, excess: float, upward: bool
) -> None:
    online = sorted((a for a in fleet if a.online), key=lambda a: a.asset_id)
    lows = [ref_low(ref_bounds_kw(a)[0], step) for a in online]
    highs = [ref_high(ref_bounds_kw(a)[1], step) for a in online]
    pins = highs if upward else lows
    assume(all(p is not None for p in pins))
    assume(all(lo is None or hi is None or lo <= hi for lo, hi in zip(lows, highs, strict=True)))
    edge = sum(p for p in pins if p is not None)
    beyond = excess + step  # at least one whole step past the edge, whatever the rounding
    total = grid_value(edge, step) + (beyond if upward else -beyond)
    for policy in POLICIES:
        result = split(total, fleet, step=step, policy=policy)
        assert steps_of(result) == pins
        target = round(total / step)
        assert result.shortfall_kw == grid_value(target - edge, step)
        assert (result.shortfall_kw > 0) == upward
        assert result.shortfall_kw != 0


@RULES
@given(assets(), STEPS, st.floats(-1000.0, 1000.0))
def test_rule6_no_online_assets_means_empty_allocations_and_full_shortfall(
    fleet: list[AssetShare], step: float, total: float
) -> None:
    offline = [AssetShare(a.asset_id, a.capacity_kw, online=False) for a in fleet]
    result = split(total, offline, step=step)
    assert dict(result.allocations) == {}
    assert result.shortfall_kw == result.requested_kw == grid_value(round(total / step), step)


@RULES
@given(
    IDS,
    st.sampled_from(["capacity_kw", "min_kw", "max_kw"]),
    st.sampled_from([math.nan, INF, -INF]),
)
def test_rule7_non_finite_numbers_are_rejected_with_asset_and_field(
    asset_id: str, field: str, value: float
) -> None:
    with pytest.raises(ValueError, match=f"^asset '{asset_id}': {field} is "):
        AssetShare(asset_id, **kwargs(field, value))


@RULES
@given(IDS, st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_rule7_min_above_max_is_rejected_with_both_values(
    asset_id: str, low: float, high: float
) -> None:
    assume(low > high)
    with pytest.raises(ValueError, match=f"^asset '{asset_id}': min_kw") as info:
        AssetShare(asset_id, min_kw=low, max_kw=high)
    assert f"({low!r}) > max_kw ({high!r})" in str(info.value)


@RULES
@given(STEPS, st.floats(-1000.0, 1000.0), st.floats(0.0, 1000.0))
def test_bounds_snap_to_the_nearest_grid_point_inside(
    step: float, low: float, width: float
) -> None:
    high = low + width
    lo, hi = ref_low(low, step), ref_high(high, step)
    assert lo is not None
    assert hi is not None
    asset = AssetShare("a", min_kw=low, max_kw=high)
    if lo > hi:
        with pytest.raises(ValueError, match=r"^asset 'a': no multiple of step"):
            split(0, [asset], step=step)
        return
    # Requests beyond either end pin the asset at its snapped bound.
    assert split(high + 10, [asset], step=step).allocations["a"] == grid_value(hi, step)
    assert split(low - 10, [asset], step=step).allocations["a"] == grid_value(lo, step)
