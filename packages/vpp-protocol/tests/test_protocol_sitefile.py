"""The site file: valid files load with the documented defaults; bad ones say where and what."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vpp_protocol.sitefile import SiteFileError, load_site_file, parse_site_file

GOOD = """\
site_id: site-a
headend: {host: 10.0.0.5, port: 50052}
telemetry_interval_s: 2
groups: [vpp-north]
assets:
  - asset_id: site-a-bess-1
    kind: bess
    capacity_kw: 250
    energy_kwh: 500
  - asset_id: site-a-pv-1
    kind: pv
    capacity_kw: 100
  - asset_id: site-a-ev-1
    kind: ev_charger
    capacity_kw: 22
  - asset_id: site-a-meter
    kind: meter
  - asset_id: site-a-gen
    kind: genset
    min_kw: 30
    max_kw: 120
"""


def test_a_good_file_loads_with_kind_defaults() -> None:
    site = parse_site_file(GOOD)
    assert site.site_id == "site-a"
    assert (site.headend.host, site.headend.port) == ("10.0.0.5", 50052)
    assert site.telemetry_interval_s == 2
    assert site.groups == ["vpp-north"]
    bounds = {a.asset_id: a.bounds for a in site.assets}
    assert bounds == {
        "site-a-bess-1": (-250, 250),
        "site-a-pv-1": (0, 100),
        "site-a-ev-1": (-22, 0),
        "site-a-meter": (0, 0),
        "site-a-gen": (30, 120),
    }
    meter = site.asset("site-a-meter")
    assert meter is not None
    assert not meter.dispatchable
    assert site.asset("nope") is None


def test_unknown_capacity_means_unbounded() -> None:
    site = parse_site_file("site_id: s\nassets: [{asset_id: x, kind: other}]")
    assert site.assets[0].bounds == (-math.inf, math.inf)


BAD = [
    ("assets: [{asset_id: a, kind: pv}]", "missing required field `site_id`"),
    (
        "site_id: s\nassets:\n  - {asset_id: a, kind: pv}\n  - {asset_id: a, kind: bess}\n",
        "f.yaml:4: assets[1].asset_id: duplicate asset_id 'a' (also assets[0])",
    ),
    (
        "site_id: s\nassets:\n  - asset_id: a\n    kind: pv\n    min_kw: 5\n    max_kw: 3\n",
        "f.yaml:5: assets[0].min_kw: min_kw (5.0) is greater than max_kw (3.0)",
    ),
    (
        "site_id: s\nassets:\n  - {asset_id: a, kind: nuclear}\n",
        "f.yaml:3: assets[0].kind: 'nuclear' is not a valid kind: must be one of pv, bess, "
        "meter, genset, ev_charger, load, other",
    ),
    (
        "site_id: [s\n",
        "f.yaml:2: not valid YAML: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence started on line 1)",
    ),
    (
        "site_id: s\nassets:\n  - {asset_id: a, kind: pv}\n"
        "  - {asset_id: b, kind: pv, max_kw: lots}\n",
        "f.yaml:4: assets[1].max_kw: Expected `float | null`, got `str`",
    ),
    ("site_id: 's a'\nassets: [{asset_id: a, kind: pv}]", "site_id: 's a' must match"),
    ("site_id: s\nassets: []", "assets: a site needs at least one asset"),
    (
        "site_id: s\nlegacy: true\nassets: [{asset_id: a, kind: pv}, {asset_id: b, kind: pv}]",
        "a legacy site has exactly one asset, not 2",
    ),
    (
        "site_id: s\nassets: [{asset_id: a, kind: pv, capacity_kw: -1}]",
        "assets[0].capacity_kw: -1.0 is negative",
    ),
    (
        "site_id: s\nassets: [{asset_id: a, kind: pv, max_kw: .inf}]",
        "assets[0].max_kw: inf is not a finite number",
    ),
    (
        "site_id: s\nheadend: {port: 70000}\nassets: [{asset_id: a, kind: pv}]",
        "headend.port: 70000 is not a TCP port",
    ),
    ("site_id: s\nassets: [{asset_id: a, kind: pv, colour: red}]", "unknown field `colour`"),
    (
        "site_id: s\ntelemetry_interval_s: 0\nassets: [{asset_id: a, kind: pv}]",
        "telemetry_interval_s: must be a positive number of seconds",
    ),
    ("site_id: s\ngroups: ['bad group']\nassets: [{asset_id: a, kind: pv}]", "groups[0]"),
    (
        "site_id: s\ngateway: {spool_max_bytes: 10}\nassets: [{asset_id: a, kind: pv}]",
        "gateway.spool_max_bytes: must be at least 65536",
    ),
    (
        "site_id: s\ngateway: {heartbeat_interval_s: -1}\nassets: [{asset_id: a, kind: pv}]",
        "gateway.heartbeat_interval_s: must be a positive number",
    ),
    ("- just a list", "Expected `object`, got `array`"),
    # Round 2: operating envelope and time in force (DESIGN.md §3a, §3b).
    (
        "site_id: s\nassets:\n"
        "  - {asset_id: g, kind: genset, capacity_kw: 100, min_stable_kw: -5}\n",
        "f.yaml:3: assets[0].min_stable_kw: -5.0 is negative",
    ),
    (
        "site_id: s\nassets:\n  - {asset_id: a, kind: pv}\n"
        "  - {asset_id: g, kind: genset, capacity_kw: 100, min_stable_kw: 120}\n",
        "f.yaml:4: assets[1].min_stable_kw: min_stable_kw (120.0) is greater than max_kw (100.0)",
    ),
    (
        "site_id: s\nassets: [{asset_id: g, kind: genset, capacity_kw: 100, min_stable_kw: .nan}]",
        "assets[0].min_stable_kw: nan is not a finite number",
    ),
    (
        "site_id: s\nassets: [{asset_id: g, kind: genset, min_stable_kw: lots}]",
        "assets[0].min_stable_kw: Expected `float`, got `str`",
    ),
    (
        "site_id: s\nassets: [{asset_id: b, kind: bess, capacity_kw: 50, fallback_kw: 60}]",
        "assets[0].fallback_kw: fallback_kw (60.0) is outside [-50.0, 50.0]",
    ),
    (
        "site_id: s\nassets: [{asset_id: e, kind: ev_charger, capacity_kw: 22, fallback_kw: 5}]",
        "assets[0].fallback_kw: fallback_kw (5.0) is outside [-22.0, 0.0]",
    ),
    (
        "site_id: s\nassets:\n"
        "  - {asset_id: g, kind: genset, capacity_kw: 100, min_stable_kw: 40, fallback_kw: 20}\n",
        "f.yaml:3: assets[0].fallback_kw: fallback_kw (20.0) is between 0 and min_stable_kw (40.0)",
    ),
    (
        "site_id: s\nfailsafe_after_s: -1\nassets: [{asset_id: a, kind: pv}]",
        "f.yaml:2: failsafe_after_s: must be a number of seconds >= 0 (0 = off)",
    ),
    (
        "site_id: s\nfailsafe_after_s: .inf\nassets: [{asset_id: a, kind: pv}]",
        "failsafe_after_s: must be a number of seconds >= 0",
    ),
    (
        "site_id: s\nfailsafe_after_s: soon\nassets: [{asset_id: a, kind: pv}]",
        "failsafe_after_s: Expected `float`, got `str`",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1][:40] for b in BAD])
def test_bad_files_name_where_and_what(text: str, expected: str) -> None:
    with pytest.raises(SiteFileError) as info:
        parse_site_file(text, "f.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("f.yaml")


def test_load_site_file_reads_from_disk_and_reports_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(GOOD)
    assert load_site_file(path).site_id == "site-a"
    with pytest.raises(SiteFileError, match="cannot read"):
        load_site_file(tmp_path / "missing.yaml")


def test_envelope_and_time_in_force_fields_default_and_load() -> None:
    site = parse_site_file(GOOD)
    assert site.failsafe_after_s == 900
    assert all(a.min_stable_kw == 0 and a.fallback_kw is None for a in site.assets)
    site = parse_site_file(
        "site_id: s\nfailsafe_after_s: 0\nassets:\n"
        "  - {asset_id: g, kind: genset, capacity_kw: 200, min_stable_kw: 60, fallback_kw: 0}\n"
        "  - {asset_id: h, kind: genset, capacity_kw: 200, min_stable_kw: 60, fallback_kw: 80}\n"
        "  - {asset_id: b, kind: bess, capacity_kw: 50, fallback_kw: -10}\n"
        "  - {asset_id: x, kind: other, min_stable_kw: 5}\n"  # unbounded: any minimum fits
    )
    assert site.failsafe_after_s == 0  # 0 = fail-safe off
    assets = {a.asset_id: a for a in site.assets}
    assert (assets["g"].min_stable_kw, assets["g"].fallback_kw) == (60, 0)
    assert assets["h"].fallback_kw == 80
    assert assets["b"].fallback_kw == -10
    assert assets["x"].min_stable_kw == 5


SEVERAL = """\
# a site file with five mistakes
colour: blue
headend: {host: 127.0.0.1, port: 50051}
assets:
  - asset_id: s-pv-1
    kind: pv
    capacity_kw: 100
  - asset_id: s-bess-1
    kind: bess
    capacity_kw: -250
  - asset_id: s-pv-2
    kind: solar
    capacity_kw: 50
  - {asset_id: s-pv-1, kind: pv}
"""


def test_every_problem_of_a_file_is_reported_at_once_each_with_its_line() -> None:
    with pytest.raises(SiteFileError) as info:
        parse_site_file(SEVERAL, "site.yaml")
    lines = str(info.value).splitlines()
    assert lines == [
        "site.yaml:2: colour: unknown field `colour`; expected one of: site_id, assets, headend, "
        "telemetry_interval_s, groups, legacy, gateway, failsafe_after_s",
        "site.yaml:2: site_id: missing required field `site_id`",
        "site.yaml:10: assets[1].capacity_kw: -250.0 is negative",
        "site.yaml:12: assets[2].kind: 'solar' is not a valid kind: must be one of pv, bess, "
        "meter, genset, ev_charger, load, other",
        "site.yaml:14: assets[3].asset_id: duplicate asset_id 's-pv-1' (also assets[0])",
    ]
    # the same, one by one, for a program to use
    assert [(p.path, p.line) for p in info.value.problems] == [
        ("colour", 2),
        ("site_id", 2),
        ("assets[1].capacity_kw", 10),
        ("assets[2].kind", 12),
        ("assets[3].asset_id", 14),
    ]


def test_a_missing_kind_lists_the_kinds_and_a_typo_gets_a_suggestion() -> None:
    text = "site_id: s\nassets:\n  - asset_id: a\n    maxkw: 3\n  - [not, a, mapping]\n"
    with pytest.raises(SiteFileError) as info:
        parse_site_file(text, "f.yaml")
    assert str(info.value).splitlines() == [
        "f.yaml:3: assets[0].kind: missing required field `kind` "
        "(one of pv, bess, meter, genset, ev_charger, load, other)",
        "f.yaml:4: assets[0].maxkw: unknown field `maxkw`; did you mean `max_kw`?",
        "f.yaml:5: assets[1]: Expected `object`, got `array`",
    ]


def test_each_bad_entry_of_a_list_and_a_repeated_key_are_reported() -> None:
    text = (
        "site_id: s\n"
        "groups: [ok, 'bad group', 3]\n"
        "assets:\n"
        "  - asset_id: a\n"
        "    kind: pv\n"
        "    kind: bess\n"
        "  - {asset_id: b, kind: bess, capacity_kw: 10, fallback_kw: 20, energy_kwh: lots}\n"
    )
    with pytest.raises(SiteFileError) as info:
        parse_site_file(text, "f.yaml")
    assert str(info.value).splitlines() == [
        "f.yaml:2: groups[1]: 'bad group' must match [A-Za-z0-9._-]{1,64}",
        "f.yaml:2: groups[2]: Expected `str`, got `int`",
        "f.yaml:6: assets[0].kind: duplicate key (also on line 5): YAML keeps only the last",
        # fallback_kw is not judged while the asset has another problem
        "f.yaml:7: assets[1].energy_kwh: Expected `float | null`, got `str`",
    ]


def test_an_empty_file_says_what_a_site_file_needs() -> None:
    with pytest.raises(SiteFileError, match=r"^f\.yaml: the file is empty: .*site_id and assets"):
        parse_site_file("# nothing yet\n", "f.yaml")
