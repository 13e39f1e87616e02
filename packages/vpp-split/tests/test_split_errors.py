"""Bad input raises ValueError naming the asset and the field; unreachable requests do not."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from vpp_split import AssetShare, split

NAN = math.nan
INF = math.inf


def kwargs(field: str, value: float) -> dict[str, Any]:
    return {field: value}


@pytest.mark.parametrize("field", ["capacity_kw", "min_kw", "max_kw"])
def test_nan_field_is_rejected(field: str) -> None:
    with pytest.raises(ValueError, match=f"^asset 'b': {field} is NaN$"):
        AssetShare("b", **kwargs(field, NAN))


@pytest.mark.parametrize("field", ["capacity_kw", "min_kw", "max_kw"])
@pytest.mark.parametrize("value", [INF, -INF])
def test_infinite_field_is_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^asset 'b': {field} is infinite \(-?inf\)$"):
        AssetShare("b", **kwargs(field, value))


def test_negative_capacity_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^asset 'x': capacity_kw \(-5\.0\) is negative$"):
        AssetShare("x", capacity_kw=-5.0)


def test_min_above_max_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^asset 'x': min_kw \(5\.0\) > max_kw \(3\.0\)$"):
        AssetShare("x", min_kw=5.0, max_kw=3.0)


def test_min_above_defaulted_max_names_the_default() -> None:
    msg = r"^asset 'g': min_kw \(150\.0\) > max_kw \(100\.0, from capacity_kw\)$"
    with pytest.raises(ValueError, match=msg):
        AssetShare("g", capacity_kw=100, min_kw=150)


def test_max_below_defaulted_min_names_the_default() -> None:
    msg = r"^asset 'p': min_kw \(0\.0, from capacity_kw\) > max_kw \(-1\.0\)$"
    with pytest.raises(ValueError, match=msg):
        AssetShare("p", capacity_kw=100, max_kw=-1)


@pytest.mark.parametrize("asset_id", ["", 7, None])
def test_empty_or_non_string_asset_id_is_rejected(asset_id: object) -> None:
    with pytest.raises(ValueError, match="asset_id must be a non-empty string"):
        AssetShare(asset_id)  # type: ignore[arg-type]


def test_duplicate_asset_id_is_rejected_even_if_offline() -> None:
    assets = [AssetShare("a", 1), AssetShare("b", 1), AssetShare("a", 2, online=False)]
    with pytest.raises(ValueError, match=r"^asset 'a': duplicate asset_id$"):
        split(1, assets)


@pytest.mark.parametrize("step", [0, -0.001, NAN, INF, -INF])
def test_bad_step_is_rejected(step: float) -> None:
    with pytest.raises(ValueError, match=r"^step must be a positive finite number"):
        split(1, [AssetShare("a", 1)], step=step)


@pytest.mark.parametrize(("total", "word"), [(NAN, "NaN"), (INF, "infinite"), (-INF, "infinite")])
def test_non_finite_total_is_rejected(total: float, word: str) -> None:
    with pytest.raises(ValueError, match=f"^total_kw is {word}$"):
        split(total, [AssetShare("a", 1)])


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^unknown policy 'greedy'; expected one of"):
        split(1, [AssetShare("a", 1)], policy="greedy")  # type: ignore[arg-type]


def test_bounds_with_no_grid_point_between_them_are_rejected() -> None:
    msg = re.escape(
        "asset 'x': no multiple of step 0.001 lies within [min_kw 0.0004, max_kw 0.0006]"
    )
    with pytest.raises(ValueError, match=f"^{msg}$"):
        split(1, [AssetShare("ok", 1), AssetShare("x", min_kw=0.0004, max_kw=0.0006)])


def test_offline_asset_is_not_checked_against_the_grid() -> None:
    result = split(1, [AssetShare("ok", 1), AssetShare("x", 1, 0.0004, 0.0006, online=False)])
    assert dict(result.allocations) == {"ok": 1.0}


@pytest.mark.parametrize("field", ["min_kw", "max_kw"])
def test_bound_too_far_from_zero_for_the_step_is_rejected(field: str) -> None:
    value = -1e12 if field == "min_kw" else 1e12
    asset = AssetShare("big", **kwargs(field, value))
    with pytest.raises(ValueError, match=f"^asset 'big': {field} .* more than 2\\*\\*40 steps"):
        split(1, [AssetShare("a", 1), asset])


def test_total_too_far_from_zero_for_the_step_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^total_kw: 1e\+20 is more than 2\*\*40 steps"):
        split(1e20, [AssetShare("a", 1)])


def test_same_bound_is_fine_with_a_coarser_step() -> None:
    assert split(1e12, [AssetShare("big", 1e12)], step=1.0).shortfall_kw == 0.0


def test_unreachable_request_does_not_raise() -> None:
    result = split(1e6, [AssetShare("a", 1)])
    assert result.allocated_kw == 1.0
    assert result.shortfall_kw == 999_999.0
