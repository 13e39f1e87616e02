"""Worked examples with numbers a reader can check by hand."""

from __future__ import annotations

import dataclasses
import doctest
import math

import pytest

import vpp_split
from vpp_split import AssetShare, SplitResult, split


def alloc(result: SplitResult) -> dict[str, float]:
    return dict(result.allocations)


# --- proportional -------------------------------------------------------------------------


def test_worked_example_clamped_asset_is_redistributed() -> None:
    # Unclamped lam = 0.7 gives 175 / 350 / 175; b stops at 300 and the missing 50 kW go to
    # a and c in proportion 250 : 250 (lam = 0.8).
    result = split(
        700,
        [
            AssetShare("a", capacity_kw=250),
            AssetShare("b", capacity_kw=500, max_kw=300),
            AssetShare("c", capacity_kw=250),
        ],
    )
    assert alloc(result) == {"a": 200.0, "b": 300.0, "c": 200.0}
    assert result.allocated_kw == 700.0
    assert result.shortfall_kw == 0.0
    assert result.policy == "proportional"
    assert result.explain() == (
        "split 700.000 kW proportional over 3 assets: a=200.000 b=300.000 c=200.000"
        " (shortfall 0.000)"
    )


def test_unclamped_split_is_exactly_proportional() -> None:
    result = split(600, [AssetShare("a", 250), AssetShare("b", 500), AssetShare("c", 250)])
    assert alloc(result) == {"a": 150.0, "b": 300.0, "c": 150.0}


def test_thousand_kw_over_250_500_250_with_one_clamped_at_200_is_short() -> None:
    # The fleet can only deliver 250 + 200 + 250 = 700 kW: everyone at max, 300 kW short.
    result = split(
        1000,
        [AssetShare("a", 250), AssetShare("b", 500, max_kw=200), AssetShare("c", 250)],
    )
    assert alloc(result) == {"a": 250.0, "b": 200.0, "c": 250.0}
    assert result.allocated_kw == 700.0
    assert result.shortfall_kw == 300.0
    assert result.explain().endswith("(shortfall 300.000)")


def test_charge_request_goes_to_batteries_not_pv() -> None:
    result = split(
        -300,
        [
            AssetShare("pv", capacity_kw=100),  # [0, 100]: cannot absorb
            AssetShare("bat1", capacity_kw=250, min_kw=-250, max_kw=250),
            AssetShare("bat2", capacity_kw=250, min_kw=-250, max_kw=250),
        ],
    )
    assert alloc(result) == {"bat1": -150.0, "bat2": -150.0, "pv": 0.0}
    assert result.shortfall_kw == 0.0


def test_charge_request_beyond_storage_is_short_with_negative_shortfall() -> None:
    result = split(-600, [AssetShare("pv", 100), AssetShare("bat", 250, -250, 250)])
    assert alloc(result) == {"bat": -250.0, "pv": 0.0}
    assert result.shortfall_kw == -350.0  # requested - allocated


def test_genset_minimum_load_is_respected_by_proportional() -> None:
    # S(lam) = clamp(100 lam, -100, 100) + clamp(100 lam, 30, 100) = 10  ->  lam = -0.2
    result = split(10, [AssetShare("bat", 100, -100, 100), AssetShare("gen", 100, min_kw=30)])
    assert alloc(result) == {"bat": -20.0, "gen": 30.0}


def test_request_below_every_minimum_pins_everyone_at_min() -> None:
    result = split(0, [AssetShare("gen1", 100, min_kw=30), AssetShare("gen2", 50, min_kw=20)])
    assert alloc(result) == {"gen1": 30.0, "gen2": 20.0}
    assert result.shortfall_kw == -50.0


def test_flat_region_between_assets_is_solved() -> None:
    # Equal weights: a is full at lam = 1, b only starts at lam = 5, so S == 6 on [1, 5].
    result = split(6, [AssetShare("a", 1), AssetShare("b", 10, min_kw=5)], step=1, policy="equal")
    assert alloc(result) == {"a": 1.0, "b": 5.0}


# --- rounding -----------------------------------------------------------------------------


def test_largest_remainder_ties_go_to_smallest_asset_id() -> None:
    result = split(1, [AssetShare("c", 1), AssetShare("a", 1), AssetShare("b", 1)])
    assert alloc(result) == {"a": 0.334, "b": 0.333, "c": 0.333}
    assert result.allocated_kw == 1.0


def test_largest_remainder_prefers_larger_fraction() -> None:
    # Ideal 0.4 * (1, 2, 2) = 0.4 / 0.8 / 0.8 steps of 1 kW: floors 0 / 0 / 0, two steps go to
    # the 0.8s.
    result = split(2, [AssetShare("a", 1), AssetShare("b", 2), AssetShare("c", 2)], step=1)
    assert alloc(result) == {"a": 0.0, "b": 1.0, "c": 1.0}


def test_outputs_are_clean_decimals() -> None:
    result = split(1, [AssetShare("a", 1), AssetShare("b", 1), AssetShare("c", 1)], step=0.1)
    assert alloc(result) == {"a": 0.4, "b": 0.3, "c": 0.3}
    assert [repr(v) for v in result.allocations.values()] == ["0.4", "0.3", "0.3"]


def test_bound_on_the_grid_is_kept_despite_binary_round_off() -> None:
    # 0.3 / 0.1 == 2.9999999999999996 in floats; the 0.3 kW bound must still be usable.
    result = split(1, [AssetShare("a", 1, max_kw=0.3), AssetShare("b", 1)], step=0.1)
    assert alloc(result) == {"a": 0.3, "b": 0.7}


def test_bound_between_grid_points_is_snapped_inward() -> None:
    result = split(10, [AssetShare("a", 10, min_kw=0.25, max_kw=0.75)], step=0.5)
    assert alloc(result) == {"a": 0.5}
    assert result.shortfall_kw == 9.5


def test_request_is_rounded_to_the_grid() -> None:
    result = split(100.0004, [AssetShare("a", 200)])
    assert result.requested_kw == 100.0
    assert alloc(result) == {"a": 100.0}
    assert result.shortfall_kw == 0.0


def test_float_near_tie_is_resolved_exactly() -> None:
    # With weights 0.7 / 0.3 the breakpoint where b fills (lam = 30 / 0.3) gives
    # S = 100 - 1.85e-15: floats cannot tell it from 100, exact arithmetic can (b is full).
    result = split(100, [AssetShare("a", 0.7, -20, 191), AssetShare("b", 0.3, 28, 30)], step=1)
    assert alloc(result) == {"a": 70.0, "b": 30.0}


# --- equal and the proportional fallback ----------------------------------------------------


def test_equal_ignores_capacity() -> None:
    result = split(90, [AssetShare("a", 100), AssetShare("b", 10)], policy="equal")
    assert alloc(result) == {"a": 80.0, "b": 10.0}  # b is full at 10, a takes the rest


@pytest.mark.parametrize("capacity", [None, 0.0])
def test_proportional_falls_back_to_equal_without_capacity(capacity: float | None) -> None:
    result = split(90, [AssetShare("a", 100), AssetShare("b", capacity, max_kw=60)])
    assert alloc(result) == {"a": 45.0, "b": 45.0}
    assert result.policy == "equal"
    assert result.requested_policy == "proportional"
    assert result.fallback
    assert "equal (fallback from proportional" in result.explain()


def test_offline_asset_without_capacity_does_not_force_fallback() -> None:
    result = split(90, [AssetShare("a", 100), AssetShare("b", online=False)])
    assert result.policy == "proportional"
    assert not result.fallback


def test_unbounded_assets_share_equally() -> None:
    result = split(-7, [AssetShare("x"), AssetShare("y")], step=1, policy="equal")
    assert alloc(result) == {"x": -3.0, "y": -4.0}  # -3.5 each: floor -4 / -4, one step back


# --- priority -------------------------------------------------------------------------------


def fleet_for_priority() -> list[AssetShare]:
    return [
        AssetShare("gen", 200, min_kw=30, priority=2),  # minimum stable load 30 kW
        AssetShare("pv", 50, priority=1),
        AssetShare("bat", 100, -100, 100, priority=0),
    ]


def test_priority_fills_in_priority_order() -> None:
    # Start: bat 0, pv 0, gen 30 (its minimum).  220 kW more: bat +100, pv +50, gen +70.
    result = split(250, fleet_for_priority(), policy="priority")
    assert alloc(result) == {"bat": 100.0, "gen": 100.0, "pv": 50.0}


def test_priority_below_forced_minimum_moves_the_flexible_asset_down() -> None:
    # Start sum is 30 (gen minimum); 10 kW requested, so bat (first in order) charges 20.
    result = split(10, fleet_for_priority(), policy="priority")
    assert alloc(result) == {"bat": -20.0, "gen": 30.0, "pv": 0.0}


def test_priority_forced_charge_starts_at_its_limit() -> None:
    # "must charge at 20..50 kW": nearest feasible point to zero is -20.
    assets = [AssetShare("bat", 50, min_kw=-50, max_kw=-20), AssetShare("pv", 100, priority=1)]
    assert alloc(split(0, assets, policy="priority")) == {"bat": -20.0, "pv": 20.0}
    assert alloc(split(-40, assets, policy="priority")) == {"bat": -40.0, "pv": 0.0}


def test_priority_ties_broken_by_asset_id() -> None:
    assets = [AssetShare("b", 10), AssetShare("a", 10), AssetShare("c", 10, priority=-1)]
    assert alloc(split(15, assets, policy="priority")) == {"a": 5.0, "b": 0.0, "c": 10.0}


def test_priority_with_unbounded_asset_takes_the_rest() -> None:
    assets = [AssetShare("grid"), AssetShare("pv", 10, priority=-1)]
    assert alloc(split(25, assets, policy="priority")) == {"grid": 15.0, "pv": 10.0}


def test_priority_exact_start_point_moves_nothing() -> None:
    assert alloc(split(30, fleet_for_priority(), policy="priority")) == {
        "bat": 0.0,
        "gen": 30.0,
        "pv": 0.0,
    }


# --- result shape ---------------------------------------------------------------------------


def test_offline_assets_are_absent_and_order_is_by_asset_id() -> None:
    result = split(
        16, [AssetShare("z", 10), AssetShare("m", 10, online=False), AssetShare("a", 10)]
    )
    assert list(result.allocations) == ["a", "z"]
    assert alloc(result) == {"a": 8.0, "z": 8.0}


def test_no_online_assets_means_full_shortfall() -> None:
    result = split(5, [AssetShare("a", 10, online=False)])
    assert alloc(result) == {}
    assert result.allocated_kw == 0.0
    assert result.shortfall_kw == 5.0
    assert result.explain() == (
        "split 5.000 kW proportional over 0 assets: no online assets (shortfall 5.000)"
    )
    assert split(0, []).shortfall_kw == 0.0


def test_result_is_frozen_read_only_and_hashable() -> None:
    result = split(10, [AssetShare("a", 10)])
    with pytest.raises(TypeError):
        result.allocations["a"] = 1.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.policy = "equal"  # type: ignore[misc]
    assert hash(result) == hash(split(10, [AssetShare("a", 10)]))


def test_explain_is_one_line_and_truncated() -> None:
    assets = [AssetShare(f"a{i:02d}", 1) for i in range(20)]
    line = split(20, assets, step=1).explain()
    assert "\n" not in line
    assert line == (
        "split 20 kW proportional over 20 assets: a00=1 a01=1 a02=1 a03=1 a04=1 a05=1 a06=1"
        " a07=1 ... +12 more (shortfall 0)"
    )
    assert "over 1 asset:" in split(1, assets[:1]).explain()


def test_explain_caps_decimals_for_exotic_steps() -> None:
    line = split(1, [AssetShare("a", 1)], step=1 / 3).explain()
    assert "a=1.000000000 " in line


def test_asset_bounds_defaults() -> None:
    assert AssetShare("pv", 5).bounds_kw == (0.0, 5.0)
    assert AssetShare("x").bounds_kw == (-math.inf, math.inf)
    assert AssetShare("x", min_kw=-3).bounds_kw == (-3.0, math.inf)
    assert AssetShare("b", 5, min_kw=-5).bounds_kw == (-5.0, 5.0)


def test_package_docstring_example_runs() -> None:
    failures, attempted = doctest.testmod(vpp_split)
    assert attempted > 0
    assert failures == 0


def test_public_api() -> None:
    assert vpp_split.__version__ == "0.1.0"
    assert set(vpp_split.__all__) >= {"AssetShare", "SplitResult", "split"}
    assert vpp_split.POLICIES == ("proportional", "equal", "priority")
