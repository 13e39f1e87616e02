"""Worked examples for live envelopes and semi-continuous assets (numbers to check by hand)."""

from __future__ import annotations

import math
import re

import pytest

from vpp_split import MAX_RANGES, AssetShare, SplitResult, split


def alloc(result: SplitResult) -> dict[str, float]:
    return dict(result.allocations)


def battery(asset_id: str, cap: float, **kw: float) -> AssetShare:
    return AssetShare(asset_id, cap, -cap, cap, **kw)  # type: ignore[arg-type]


# --- envelopes -----------------------------------------------------------------------------


def test_night_time_pv_gets_nothing_and_the_batteries_take_it() -> None:
    site = [AssetShare("pv", 100, available_max_kw=0), battery("b1", 50), battery("b2", 50)]
    result = split(60, site)
    assert alloc(result) == {"b1": 30.0, "b2": 30.0, "pv": 0.0}
    assert result.shortfall_kw == 0.0
    assert dict(result.limited_by) == {"pv": "envelope"}
    assert result.explain() == (
        "split 60.000 kW proportional over 3 assets: b1=30.000 b2=30.000 pv=0.000;"
        " limited: pv=envelope (shortfall 0.000)"
    )


def test_state_of_charge_narrows_a_battery_and_the_ack_can_say_why() -> None:
    # b1 is nearly empty: it can discharge only 10 kW now; b2 takes the rest up to 50.
    site = [battery("b1", 50, available_max_kw=10), battery("b2", 50)]
    result = split(80, site)
    assert alloc(result) == {"b1": 10.0, "b2": 50.0}
    assert result.shortfall_kw == 20.0
    assert dict(result.limited_by) == {"b1": "envelope", "b2": "bound"}
    assert result.explain().endswith("; limited: b1=envelope b2=bound (shortfall 20.000)")


def test_envelope_wider_than_the_static_bounds_changes_nothing() -> None:
    site = [AssetShare("pv", 100, max_kw=60, available_min_kw=-5, available_max_kw=80)]
    result = split(100, site)
    assert alloc(result) == {"pv": 60.0}
    assert dict(result.limited_by) == {"pv": "bound"}


def test_available_range_wins_when_it_does_not_overlap_the_static_one() -> None:
    # A must-run genset (min_kw 30) that has tripped (available 0..0): it is at 0, not 30.
    tripped = AssetShare("gen", 100, min_kw=30, available_min_kw=0, available_max_kw=0)
    assert tripped.effective_bounds_kw == (0.0, 0.0)
    result = split(50, [tripped, battery("bat", 20)])
    assert alloc(result) == {"bat": 20.0, "gen": 0.0}
    assert dict(result.limited_by) == {"bat": "bound", "gen": "envelope"}
    # A full battery that the BMS forces to discharge 5..8 kW, declared "charge only".
    forced = AssetShare("b", 10, min_kw=-10, max_kw=0, available_min_kw=5, available_max_kw=8)
    assert forced.effective_bounds_kw == (5.0, 5.0)
    assert alloc(split(-3, [forced])) == {"b": 5.0}


def test_effective_bounds_default_to_the_static_ones() -> None:
    assert AssetShare("pv", 100).effective_bounds_kw == (0.0, 100.0)
    assert AssetShare("x", available_max_kw=7).effective_bounds_kw == (-math.inf, 7.0)


# --- a genset with a minimum stable load ---------------------------------------------------


def genset_site() -> list[AssetShare]:
    return [battery("bat", 30), AssetShare("gen", 100, min_stable_kw=40)]


def test_small_request_leaves_the_genset_off() -> None:
    result = split(20, genset_site())
    assert alloc(result) == {"bat": 20.0, "gen": 0.0}
    assert dict(result.committed) == {"gen": False}
    assert dict(result.limited_by) == {"gen": "min_stable"}


def test_request_beyond_the_batteries_commits_the_genset_at_40_or_more() -> None:
    # The battery alone reaches 30; with the genset on, [-30, 30] + [40, 100] = [10, 130].
    # Proportional: clamp(30 lam, -30, 30) + clamp(100 lam, 40, 100) = 50 at lam = 1/3, where
    # the genset is still pinned at its minimum (100/3 < 40): bat 10, gen 40.
    result = split(50, genset_site())
    assert alloc(result) == {"bat": 10.0, "gen": 40.0}
    assert result.allocated_kw == 50.0
    assert result.shortfall_kw == 0.0
    assert dict(result.committed) == {"gen": True}
    assert result.explain() == (
        "split 50.000 kW proportional over 2 assets: bat=10.000 gen=40.000;"
        " committed: gen=on (shortfall 0.000)"
    )


def test_just_above_the_batteries_the_battery_charges_to_keep_the_genset_at_its_minimum() -> None:
    result = split(35, genset_site())
    assert alloc(result) == {"bat": -5.0, "gen": 40.0}
    assert result.shortfall_kw == 0.0


def test_large_request_is_short_with_everything_at_its_maximum() -> None:
    result = split(150, genset_site())
    assert alloc(result) == {"bat": 30.0, "gen": 100.0}
    assert result.shortfall_kw == 20.0
    assert dict(result.limited_by) == {"bat": "bound", "gen": "bound"}


def test_unreachable_request_takes_the_nearest_reachable_total() -> None:
    gen = [AssetShare("gen", 100, min_stable_kw=40)]
    # 30 kW: reachable totals are 0 and 40..100; 40 is nearer (over-delivers 10).
    over = split(30, gen)
    assert alloc(over) == {"gen": 40.0}
    assert over.shortfall_kw == -10.0
    assert dict(over.limited_by) == {"gen": "min_stable"}
    # 20 kW: 0 and 40 are equally near; the tie goes to the smaller magnitude (off).
    tie = split(20, gen)
    assert alloc(tie) == {"gen": 0.0}
    assert tie.shortfall_kw == 20.0
    assert tie.explain() == (
        "split 20.000 kW proportional over 1 asset: gen=0.000; committed: gen=off;"
        " limited: gen=min_stable (shortfall 20.000)"
    )


def test_a_genset_whose_envelope_is_below_its_minimum_stays_off() -> None:
    derated = AssetShare("gen", 100, min_stable_kw=40, available_max_kw=30)
    result = split(25, [derated, battery("bat", 10)])
    assert alloc(result) == {"bat": 10.0, "gen": 0.0}
    assert dict(result.limited_by) == {"bat": "bound", "gen": "min_stable"}


# --- which semi-continuous assets are committed ---------------------------------------------


def test_commitment_order_is_priority_then_smaller_minimum_then_asset_id() -> None:
    gensets = [
        AssetShare("g-big", 100, min_stable_kw=50),
        AssetShare("g-small", 100, min_stable_kw=30),
        AssetShare("g-late", 100, min_stable_kw=10, priority=1),
        AssetShare("g-twin", 100, min_stable_kw=30),
    ]
    # One genset suffices: the first in order (priority 0, minimum 30, 'g-small' < 'g-twin').
    assert dict(split(60, gensets).committed) == {
        "g-big": False,
        "g-late": False,
        "g-small": True,
        "g-twin": False,
    }
    # Two are needed for 150: the two first in order.
    committed = split(150, gensets).committed
    assert sorted(k for k, on in committed.items() if on) == ["g-small", "g-twin"]


def test_a_later_unit_is_committed_when_no_earlier_combination_can_make_it() -> None:
    # 45 kW: g1 (first in order) alone runs 10 or nothing; only g2 alone hits 45 exactly --
    # a greedy "commit in order until enough" would run both and deliver at least 55.
    gensets = [
        AssetShare("g1", 10, min_stable_kw=10),  # fixed 10 kW when on
        AssetShare("g2", 50, min_stable_kw=45),
    ]
    result = split(45, gensets)
    assert alloc(result) == {"g1": 0.0, "g2": 45.0}
    assert result.shortfall_kw == 0.0
    assert alloc(split(58, gensets)) == {"g1": 10.0, "g2": 48.0}


def test_small_units_combine_where_one_large_one_would_overshoot() -> None:
    gensets = [
        AssetShare("big", 100, min_stable_kw=90),
        AssetShare("s1", 30, min_stable_kw=20),
        AssetShare("s2", 30, min_stable_kw=20),
    ]
    result = split(55, gensets)
    assert alloc(result) == {"big": 0.0, "s1": 27.5, "s2": 27.5}


def test_a_unit_that_can_run_on_either_side_prefers_the_side_of_the_request() -> None:
    # bat runs at 2..30 kW either way (or off); the genset, first in order, is 0 or 40..100.
    # 20 kW is reached by bat=+20 alone or by gen=40 with bat=-20: the side of the request wins.
    site = [
        AssetShare("gen", 100, min_stable_kw=40),
        AssetShare("bat", 30, -30, 30, min_stable_kw=2, priority=1),
    ]
    result = split(20, site)
    assert alloc(result) == {"bat": 20.0, "gen": 0.0}
    # 1 kW: off gives 0, +2 overshoots by 1; the tie goes to the smaller magnitude.
    assert alloc(split(1, site)) == {"bat": 0.0, "gen": 0.0}


def test_an_electrolyser_is_semi_continuous_on_the_absorbing_side() -> None:
    site = [AssetShare("el", 100, -100, 0, min_stable_kw=30), battery("bat", 20)]
    assert alloc(split(-10, site)) == {"bat": -10.0, "el": 0.0}
    assert alloc(split(-60, site)) == {"bat": -10.0, "el": -50.0}
    result = split(-35, site)
    assert sum(result.allocations.values()) == -35.0
    assert result.allocations["el"] <= -30.0


def test_a_must_run_genset_is_never_off() -> None:
    must_run = AssetShare("gen", 100, min_kw=10, min_stable_kw=40)
    result = split(0, [must_run, battery("bat", 30)])
    assert alloc(result) == {"bat": -30.0, "gen": 40.0}
    assert result.shortfall_kw == -10.0
    assert dict(result.committed) == {"gen": True}


def test_priority_policy_fills_over_the_committed_bounds() -> None:
    site = [
        battery("bat", 30),
        AssetShare("gen", 100, min_stable_kw=40, priority=1),
        AssetShare("pv", 20, priority=2),
    ]
    # 60 kW: bat + pv reach 50, so the genset runs; it starts at 40, then bat fills first.
    assert alloc(split(60, site, policy="priority")) == {"bat": 20.0, "gen": 40.0, "pv": 0.0}


def test_an_unbounded_asset_absorbs_a_large_minimum_stable_load() -> None:
    site = [AssetShare("grid"), AssetShare("gen", min_kw=10, min_stable_kw=1000)]
    assert alloc(split(5, site, step=1)) == {"gen": 1000.0, "grid": -995.0}


def test_beyond_the_search_limit_the_reachable_set_is_trimmed_within_its_bound() -> None:
    # Fixed-output units of 3**i kW (1 kW grid, no continuous asset to close the gaps): the
    # first j reach 2**(j-1) separate intervals of totals.  Eleven units make 1024 (exact);
    # the twelfth would make 2048 > MAX_RANGES, so that set is trimmed with
    # d = ceil(span / 1024) = ceil(265720 / 1024) = 260 kW: the total is within 260 kW.
    units = [AssetShare(f"u{i:02d}", 3.0**i, min_stable_kw=3.0**i) for i in range(12)]
    assert MAX_RANGES == 1024
    exact = split(3**10 + 3**4 + 1, units[:11], step=1)
    assert exact.commitment_exact
    assert exact.shortfall_kw == 0.0
    assert [k for k, on in exact.committed.items() if on] == ["u00", "u04", "u10"]
    trimmed = split(3**11 + 3**5 + 1, units, step=1)
    assert not trimmed.commitment_exact
    assert "(search trimmed)" in trimmed.explain()
    assert abs(trimmed.shortfall_kw) <= 260
    assert trimmed.committed["u11"] is True
    for asset_id, kw in trimmed.allocations.items():  # every unit off or at its fixed output
        assert kw in (0.0, 3.0 ** int(asset_id[1:]))


# --- errors and compatibility ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["available_min_kw", "available_max_kw", "min_stable_kw"])
def test_non_finite_new_fields_are_rejected(field: str) -> None:
    with pytest.raises(ValueError, match=f"^asset 'g': {field} is NaN$"):
        AssetShare("g", 10, **{field: math.nan})  # type: ignore[arg-type]


def test_available_min_above_max_is_rejected() -> None:
    msg = r"^asset 'b': available_min_kw \(5\.0\) > available_max_kw \(3\.0\)$"
    with pytest.raises(ValueError, match=msg):
        AssetShare("b", 10, available_min_kw=5.0, available_max_kw=3.0)


def test_negative_min_stable_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^asset 'g': min_stable_kw \(-1\.0\) is negative$"):
        AssetShare("g", 10, min_stable_kw=-1.0)


def test_zero_min_stable_means_continuous() -> None:
    result = split(5, [AssetShare("g", 10, min_stable_kw=0)])
    assert alloc(result) == {"g": 5.0}
    assert dict(result.committed) == {}


def test_available_range_without_a_grid_point_is_rejected() -> None:
    asset = AssetShare("pv", 10, available_min_kw=1.0004, available_max_kw=1.0006)
    msg = re.escape(
        "asset 'pv': no multiple of step 0.001 lies within"
        " [available_min_kw 1.0004, available_max_kw 1.0006]"
    )
    with pytest.raises(ValueError, match=f"^{msg}$"):
        split(1, [asset])


def test_semi_continuous_asset_with_no_allowed_setpoint_is_rejected() -> None:
    # Running 10..30 kW now (it cannot be off) and unstable below 40: nothing is allowed.
    asset = AssetShare("gen", 100, min_stable_kw=40, available_min_kw=10, available_max_kw=30)
    msg = re.escape(
        "asset 'gen': no allowed setpoint: its bounds [10.0, 30.0] exclude off (0)"
        " and min_stable_kw 40.0 lies beyond them"
    )
    with pytest.raises(ValueError, match=f"^{msg}$"):
        split(20, [asset])


def test_a_result_built_without_the_new_fields_still_works() -> None:
    result = SplitResult({"a": 1.0}, 1.0, 1.0, 0.0, "equal", "equal", 0.001)
    assert dict(result.limited_by) == {}
    assert dict(result.committed) == {}
    assert result.explain() == "split 1.000 kW equal over 1 asset: a=1.000 (shortfall 0.000)"
