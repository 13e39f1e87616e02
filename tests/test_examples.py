"""Every example site file is valid, and the examples cover what the docs promise."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import yaml

from vpp_gateway.clock import ManualClock
from vpp_gateway.devices import simulated_device
from vpp_protocol.sitefile import load_site_file

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_site_files_are_valid(path: Path) -> None:
    assert load_site_file(path).assets


def test_examples_cover_a_multi_asset_site_a_group_and_legacy_agents() -> None:
    sites = [load_site_file(p) for p in EXAMPLES]
    biggest = max(sites, key=lambda s: len(s.assets))
    assert len(biggest.assets) >= 12
    assert {"pv", "bess", "meter", "genset", "ev_charger"} <= {a.kind for a in biggest.assets}
    groups = [g for s in sites for g in s.groups]
    assert any(groups.count(g) >= 2 for g in groups), "a group spanning two sites"
    assert sum(s.legacy for s in sites) >= 2
    ids = [a.asset_id for s in sites for a in s.assets]
    assert len(ids) == len(set(ids)), "asset ids are unique across the whole system"


def test_example_gensets_state_their_minimum_stable_load() -> None:
    # The simulator has no hidden minimum any more: the site file says it (DESIGN.md §3a).
    gensets = [
        asset
        for p in EXAMPLES
        for asset in yaml.safe_load(p.read_text())["assets"]
        if asset["kind"] == "genset"
    ]
    assert gensets
    assert all("min_stable_kw" in g for g in gensets), gensets


async def test_example_pv_reads_0_at_night_until_its_solar_noon_is_moved_as_documented() -> None:
    """What examples/README.md and the site files' comments say about PV at night is true."""
    readme = (EXAMPLES[0].parent / "README.md").read_text()
    assert "PV reads 0 kW at night" in readme
    assert "simulator: {solar_noon_utc_h:" in readme
    night = ManualClock(datetime(2026, 1, 15, 23, 30, tzinfo=UTC))
    pv_files = [p for p in EXAMPLES if any(a.kind == "pv" for a in load_site_file(p).assets)]
    assert pv_files
    for path in pv_files:
        text = path.read_text()
        assert "night" in text, f"{path.name} does not say why PV reads 0 at night"
        assert "solar_noon_utc_h" in text, f"{path.name} does not say how to move solar noon"
        pv = next(a for a in load_site_file(path).assets if a.kind == "pv")
        dark = await simulated_device(pv, night, 0).read()
        assert (dark.power_kw, dark.status.value) == (0.0, "standby")
        moved = msgspec.structs.replace(pv, simulator={"solar_noon_utc_h": 23.5})
        lit = await simulated_device(moved, night, 0).read()
        assert lit.power_kw == pv.capacity_kw  # noon now: the top of the curve
