"""Every example site file is valid, and the examples cover what the docs promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
