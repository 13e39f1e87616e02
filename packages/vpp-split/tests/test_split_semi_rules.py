"""Property tests for live envelopes and semi-continuous commitment.

The reference here is brute force and shares no code with the package: grid snapping by
scanning, each asset's allowed setpoints as explicit pieces, and every on/off (and side)
combination of the semi-continuous assets enumerated with ``itertools.product``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpp_split import POLICIES, AssetShare, Policy, SplitResult, split

INF = math.inf
Piece = tuple[float, float]  # whole steps; +-inf for an open side

# ----------------------------------------------------------------------------- reference ---


def grid_value(k: float, step: float) -> float:
    return float(Decimal(int(k)) * Decimal(repr(step)))


def snap_up(x: float, step: float) -> float:
    """Smallest k with grid_value(k) >= x (scanning); -inf stays open."""
    if x == -INF:
        return -INF
    k = math.ceil(Fraction(x) / Fraction(repr(step))) - 2
    while grid_value(k, step) < x:
        k += 1
    return k


def snap_down(x: float, step: float) -> float:
    if x == INF:
        return INF
    k = math.floor(Fraction(x) / Fraction(repr(step))) + 2
    while grid_value(k, step) > x:
        k -= 1
    return k


def static_range(a: AssetShare) -> tuple[float, float]:
    low, high = (-INF, INF) if a.capacity_kw is None else (0.0, a.capacity_kw)
    return (low if a.min_kw is None else a.min_kw, high if a.max_kw is None else a.max_kw)


def effective_steps(a: AssetShare, step: float) -> tuple[float, float] | None:
    """Static range clamped into the available one, on the grid; None if either is empty."""
    s_min, s_max = static_range(a)
    s_lo, s_hi = snap_up(s_min, step), snap_down(s_max, step)
    a_min = -INF if a.available_min_kw is None else a.available_min_kw
    a_max = INF if a.available_max_kw is None else a.available_max_kw
    a_lo, a_hi = snap_up(a_min, step), snap_down(a_max, step)
    if s_lo > s_hi or a_lo > a_hi:
        return None
    return min(max(s_lo, a_lo), a_hi), min(max(s_hi, a_lo), a_hi)


def allowed_pieces(a: AssetShare, step: float) -> list[Piece] | None:
    """The asset's allowed setpoints as pieces (absorbing, off, generating); None if none."""
    bounds = effective_steps(a, step)
    if bounds is None:
        return None
    lo, hi = bounds
    if not a.min_stable_kw:
        return [(lo, hi)]
    m = snap_up(a.min_stable_kw, step)
    candidates = [(lo, min(hi, -m)), (max(lo, 0), min(hi, 0)), (max(lo, m), hi)]
    pieces = [(p, q) for p, q in candidates if p <= q]
    return pieces or None


@dataclass(frozen=True)
class Ref:
    ids: list[str]
    target: int
    feasible: bool
    total: float  # t*: the target or the reachable total nearest to it
    chosen: dict[str, Piece]  # the committed range of every online asset


def reference(total_kw: float, fleet: Sequence[AssetShare], step: float) -> Ref | None:
    online = sorted((a for a in fleet if a.online), key=lambda a: a.asset_id)
    target = round(total_kw / step)
    pieces = [allowed_pieces(a, step) for a in online]
    if any(p is None for p in pieces):
        return None
    options: list[list[Piece]] = [p for p in pieces if p is not None]
    combos = list(itertools.product(*options))

    def span(combo: Sequence[Piece]) -> tuple[float, float]:
        return sum(p[0] for p in combo), sum(p[1] for p in combo)

    def distance(combo: Sequence[Piece], t: float) -> float:
        low, high = span(combo)
        return max(low - t, t - high, 0)

    gap = min((distance(c, target) for c in combos), default=abs(target))
    if not combos[0]:  # no online assets
        return Ref([], target, target == 0, 0, {})
    # the reachable totals at that distance: target - gap or target + gap
    reachable = [
        t for t in (target - gap, target + gap) if any(distance(c, t) == 0 for c in combos)
    ]
    total = min(reachable, key=lambda t: (abs(t), t))
    # units: assets with more than one piece, in (priority, min_stable steps, asset_id) order
    units = [i for i, p in enumerate(options) if len(p) > 1]
    units.sort(key=lambda i: (online[i].priority, snap_up(online[i].min_stable_kw or 0, step)))

    def rank(i: int, piece: Piece) -> int:
        if piece[0] == piece[1] == 0:  # off
            return 0
        toward = piece[0] >= 0 if total >= 0 else piece[1] <= 0
        return 1 if toward else 2

    def colex(combo: Sequence[Piece]) -> list[int]:
        return [rank(i, combo[i]) for i in reversed(units)]

    best = min((c for c in combos if distance(c, total) == 0), key=colex)
    chosen = {a.asset_id: piece for a, piece in zip(online, best, strict=True)}
    return Ref([a.asset_id for a in online], target, gap == 0, total, chosen)


def expected_reason(a: AssetShare, step: float, chosen: Piece, up: bool) -> str:
    """The documented reason for an asset at the end of its chosen range."""
    bounds = effective_steps(a, step)
    assert bounds is not None
    if chosen[1 if up else 0] != bounds[1 if up else 0]:
        return "min_stable"
    s_min, s_max = static_range(a)
    a_min = -INF if a.available_min_kw is None else a.available_min_kw
    a_max = INF if a.available_max_kw is None else a.available_max_kw
    overlap = max(snap_up(s_min, step), snap_up(a_min, step)) <= min(
        snap_down(s_max, step), snap_down(a_max, step)
    )
    tighter = a_max < s_max if up else a_min > s_min
    return "envelope" if tighter or not overlap else "bound"


def steps_of(result: SplitResult) -> dict[str, int]:
    return {k: round(v / result.step) for k, v in result.allocations.items()}


# ---------------------------------------------------------------------------- strategies ---

CAPS = st.sampled_from([1.0, 2.5, 10.0, 13.5, 40.0, 100.0, 0.3, 7.3])
STEP = st.sampled_from([0.001, 0.1, 1.0, 2.5])


@st.composite
def live_asset(draw: st.DrawFn, asset_id: str, semi: bool) -> AssetShare:
    cap = draw(CAPS)
    kind = draw(
        st.sampled_from(
            ["genset", "electrolyser", "battery", "must_run"]
            if semi
            else ["battery", "pv", "load", "grid"]
        )
    )
    low, high, capacity = {
        "genset": (None, None, cap),
        "pv": (None, None, cap),
        "electrolyser": (-cap, 0.0, cap),
        "load": (-cap, 0.0, cap),
        "battery": (-cap, cap, cap),
        "must_run": (round(cap / 4, 1), None, cap),
        "grid": (None, None, None),
    }[kind]
    stable = draw(st.sampled_from([0.25, 0.4, 0.5, 1.0])) * cap if semi else None
    # Envelope: often absent, sometimes inside, sometimes not overlapping the static range.
    env = st.one_of(st.none(), st.floats(-1.3 * cap, 1.3 * cap), st.sampled_from([0.0, cap]))
    a_low, a_high = draw(env), draw(env)
    if a_low is not None and a_high is not None and a_low > a_high:
        a_low, a_high = a_high, a_low
    return AssetShare(
        asset_id,
        capacity,
        low,
        high,
        online=draw(st.sampled_from([True, True, True, True, False])),
        priority=draw(st.integers(0, 2)),
        available_min_kw=a_low,
        available_max_kw=a_high,
        min_stable_kw=stable,
    )


@st.composite
def live_scenarios(
    draw: st.DrawFn, max_semi: int = 6
) -> tuple[float, list[AssetShare], float, Policy]:
    n_semi = draw(st.integers(0, max_semi))
    n_cont = draw(st.integers(0, 3))
    fleet = [draw(live_asset(f"g{i}", semi=True)) for i in range(n_semi)]
    fleet += [draw(live_asset(f"c{i}", semi=False)) for i in range(n_cont)]
    fleet = draw(st.permutations(fleet))
    reach = sum(a.capacity_kw or 100.0 for a in fleet) * 1.2 + 1
    total = draw(st.one_of(st.floats(-reach, reach), st.integers(-50, 50).map(float)))
    return total, fleet, draw(STEP), draw(st.sampled_from(POLICIES))


SEMI = settings(max_examples=300, deadline=None)


# --------------------------------------------------------------------------------- rules ---


@SEMI
@given(live_scenarios())
def test_feasibility_and_shortfall_match_every_on_off_combination(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    ref = reference(total, fleet, step)
    if ref is None:  # some online asset has no allowed setpoint at all
        with pytest.raises(ValueError, match=r"^asset '"):
            split(total, fleet, step=step, policy=policy)
        return
    result = split(total, fleet, step=step, policy=policy)
    ks = steps_of(result)
    assert sum(ks.values()) == ref.total
    assert (result.shortfall_kw == 0.0) == ref.feasible
    assert result.shortfall_kw == grid_value(ref.target - ref.total, step)
    assert result.allocated_kw == grid_value(ref.total, step)


@SEMI
@given(live_scenarios())
def test_every_asset_is_within_its_effective_bounds_and_committed_ones_above_minimum(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    if reference(total, fleet, step) is None:
        return
    result = split(total, fleet, step=step, policy=policy)
    ks = steps_of(result)
    for a in fleet:
        if not a.online:
            assert a.asset_id not in result.allocations
            continue
        bounds = effective_steps(a, step)
        assert bounds is not None
        k = ks[a.asset_id]
        assert bounds[0] <= k <= bounds[1]
        if a.min_stable_kw:
            # off, or at least min_stable from zero, and committed says which
            assert k == 0 or abs(result.allocations[a.asset_id]) >= a.min_stable_kw
            assert result.committed[a.asset_id] == (k != 0)
        else:
            assert a.asset_id not in result.committed


@SEMI
@given(live_scenarios())
def test_commitment_is_the_documented_choice_and_the_split_runs_over_its_bounds(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    ref = reference(total, fleet, step)
    if ref is None:
        return
    result = split(total, fleet, step=step, policy=policy)
    ks = steps_of(result)
    for asset_id, (low, high) in ref.chosen.items():
        assert low <= ks[asset_id] <= high
    # Same allocations as a plain split of t* over the committed ranges as static bounds.
    by_id = {a.asset_id: a for a in fleet}
    plain = [
        AssetShare(
            asset_id,
            by_id[asset_id].capacity_kw,
            None if low == -INF else grid_value(low, step),
            None if high == INF else grid_value(high, step),
            priority=by_id[asset_id].priority,
        )
        for asset_id, (low, high) in ref.chosen.items()
    ]
    again = split(grid_value(ref.total, step), plain, step=step, policy=policy)
    assert dict(again.allocations) == dict(result.allocations)
    assert again.policy == result.policy


@SEMI
@given(live_scenarios(), st.data())
def test_any_permutation_gives_an_identical_result(
    scenario: tuple[float, list[AssetShare], float, Policy], data: st.DataObject
) -> None:
    total, fleet, step, policy = scenario
    if reference(total, fleet, step) is None:
        return
    first = split(total, fleet, step=step, policy=policy)
    second = split(total, data.draw(st.permutations(fleet)), step=step, policy=policy)
    assert first == second
    assert dict(first.limited_by) == dict(second.limited_by)
    assert dict(first.committed) == dict(second.committed)


@SEMI
@given(live_scenarios())
def test_limited_assets_cannot_give_more_in_the_direction_of_the_gap(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    total, fleet, step, policy = scenario
    ref = reference(total, fleet, step)
    if ref is None:
        return
    result = split(total, fleet, step=step, policy=policy)
    ks = steps_of(result)
    gap = ref.target - ref.total
    direction = (gap > 0) - (gap < 0) or (ref.target > 0) - (ref.target < 0)
    by_id = {a.asset_id: a for a in fleet}
    for asset_id, (low, high) in ref.chosen.items():
        at_end = ks[asset_id] == (high if direction > 0 else low) and direction != 0
        assert (asset_id in result.limited_by) == at_end
        if at_end:
            assert result.limited_by[asset_id] == expected_reason(
                by_id[asset_id], step, (low, high), direction > 0
            )
    if gap:
        # t* is the nearest reachable total, so the chosen ranges end there: all are limited.
        assert set(result.limited_by) == set(ref.chosen)


@settings(max_examples=200, deadline=None)
@given(live_scenarios(max_semi=0))
def test_without_envelope_or_semi_fields_nothing_changes(
    scenario: tuple[float, list[AssetShare], float, Policy],
) -> None:
    """Dropping the new fields gives the same split as the static bounds alone (round 1)."""
    total, fleet, step, policy = scenario
    static = [
        AssetShare(a.asset_id, a.capacity_kw, a.min_kw, a.max_kw, a.online, a.priority)
        for a in fleet
    ]
    if reference(total, static, step) is None:
        return
    result = split(total, static, step=step, policy=policy)
    assert dict(result.committed) == {}
    assert set(result.limited_by.values()) <= {"bound"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1_000, 100_000), min_size=1, max_size=14),
    st.floats(0.0, 1.0),
)
def test_many_fixed_output_units_stay_within_the_documented_trim_bound(
    sizes: list[int], fraction: float
) -> None:
    """Fixed-output units (min_stable = max) and nothing continuous: subset sums.

    Exact (``commitment_exact``): the gap is the minimal one.  Trimmed: every unit is still
    off or at its output, and the gap exceeds the minimal one by at most ``sum d_j``, which
    is below ``n * ceil(sum(sizes) / MAX_RANGES)``.
    """
    from vpp_split import MAX_RANGES

    units = [AssetShare(f"u{i:02d}", float(s), min_stable_kw=float(s)) for i, s in enumerate(sizes)]
    total = round(fraction * sum(sizes))
    result = split(total, units, step=1)
    reachable = {0}
    for s in sizes:
        reachable |= {r + s for r in reachable}
    best = min(abs(total - r) for r in reachable)
    for u in units:
        assert result.allocations[u.asset_id] in (0.0, u.capacity_kw)
    assert sum(result.allocations.values()) == result.allocated_kw
    gap = abs(result.shortfall_kw)
    if result.commitment_exact:
        assert gap == best
    else:
        assert best <= gap <= best + len(sizes) * -(-sum(sizes) // MAX_RANGES)
