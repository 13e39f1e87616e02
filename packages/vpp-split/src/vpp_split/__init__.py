"""vpp_split -- split a power setpoint over DER assets, deterministically and exactly.

    >>> from vpp_split import AssetShare, split
    >>> result = split(700, [
    ...     AssetShare("a", capacity_kw=250),
    ...     AssetShare("b", capacity_kw=500, max_kw=300),
    ...     AssetShare("c", capacity_kw=250),
    ... ])
    >>> dict(result.allocations)
    {'a': 200.0, 'b': 300.0, 'c': 200.0}
    >>> result.explain()
    'split 700.000 kW proportional over 3 assets: a=200.000 b=300.000 c=200.000 (shortfall 0.000)'

Summary of the rules (details and proofs in the module docstrings of ``_split``, ``_grid``,
``_bounds``, ``_commit``, ``_limits`` and ``_waterfill``):

* Work in whole steps.  ``T = round(total_kw / step)``; bounds are snapped inward
  (``ceil(min_kw / step)``, ``floor(max_kw / step)``, judged on the output floats); outputs
  are ``k * step`` as the float nearest to the exact decimal product (250.0, not 249.99999...).
* ``proportional``: ``x_i = clamp(lam * capacity_i, min_i, max_i)`` with the real ``lam`` that
  makes the sum equal ``T`` (water-filling: what a clamped asset cannot take goes to the
  others in proportion to capacity).  Falls back to ``equal`` when an online asset has no
  capacity.  ``equal``: the same with all weights 1.  Solved exactly, O(n log n).
* Rounding: floor, then the leftover steps one each by largest fractional part, ties to the
  smaller ``asset_id`` -- within one step of the ideal and never past a bound.
* ``priority``: start each asset at ``clamp(0, min, max)``, then move assets to their bound in
  the direction of the request in ascending ``(priority, asset_id)`` until met.
* Live envelope: ``available_min_kw`` / ``available_max_kw`` narrow the bounds to the static
  range clamped into the available one (the available range wins when they do not overlap).
* Semi-continuous (``min_stable_kw``): off (0) or ``|p| >= min_stable_kw``.  If the continuous
  assets cannot meet ``T`` alone, units are committed by an exact search over every on/off
  combination (``_commit``): ``T`` is met exactly whenever some combination can meet it, else
  the nearest reachable total is delivered; of the combinations that reach it, the one leaving
  the *latest* units in ``(priority, min_stable_kw, asset_id)`` order off is taken.
* Exact sum whenever the request is reachable; otherwise every asset sits at its bound in the
  direction of the request and ``shortfall_kw`` is the signed gap.  ``limited_by`` says per
  asset why it could not give more (``bound``, ``envelope``, ``min_stable``).
* Worked example (above): unclamped, ``lam = 0.7`` gives 175 / 350 / 175 kW, but ``b`` is
  capped at 300; the missing 50 kW go to ``a`` and ``c`` in proportion 250 : 250, so
  ``lam = 0.8`` and the split is 200 / 300 / 200 kW.
"""

from ._commit import MAX_RANGES
from ._grid import MAX_STEPS
from ._split import split
from ._types import LIMITS, POLICIES, AssetShare, Limit, Policy, SplitResult
from ._version import __version__

__all__ = [
    "LIMITS",
    "MAX_RANGES",
    "MAX_STEPS",
    "POLICIES",
    "AssetShare",
    "Limit",
    "Policy",
    "SplitResult",
    "__version__",
    "split",
]
