"""The shipped monitoring kit is sound: promtool accepts the rules and their unit tests
pass, every alert says how bad it is and what happened, and every metric name the rules
and the dashboard use is one a real headend exports (or a rule records)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from vpp_headend.domain.dispatch import OUTCOME_STATES

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MONITORING / "prometheus" / "rules.yml"
RULE_TESTS = MONITORING / "prometheus" / "tests.yml"
DASHBOARD = MONITORING / "grafana" / "vpp-headend.json"
#: Series Prometheus makes itself (one per scrape target).
PROMETHEUS_OWN = {"up"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (its functions, keywords, label names,
    ranges and Grafana variables left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges and subqueries
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables ($__range)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        before = e[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 15m
            continue
        if e[m.end() :].lstrip().startswith("("):  # a function
            continue
        if m.group().lower() not in _KEYWORDS:
            names.add(m.group())
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(x_bucket{instance=~"$i"}'
        "[$__rate_interval]))) > 0.25 and on (job) y offset 15m unless vpp:z > 1e3"
    )
    assert metric_names(expr) == {"x_bucket", "y", "vpp:z"}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _run(*argv: str | Path) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_promtool_accepts_the_rules(promtool: Path) -> None:
    out = _run(promtool, "check", "rules", RULES)
    assert f"SUCCESS: {len(_rules())} rules found" in out


def test_promtool_unit_tests_of_the_alerts_pass(promtool: Path) -> None:
    _run(promtool, "test", "rules", RULE_TESTS)


def test_every_alert_has_a_duration_a_severity_and_says_what_happened() -> None:
    alerts = [r for r in _rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "VppGatewayOffline",
        "VppSiteTelemetryStale",
        "VppDispatchFailureRateHigh",
        "VppDispatchShortfallRateHigh",
        "VppIngestQueueNearFull",
        "VppDatabaseUnavailable",
        "VppEventLoopLagHigh",
    }
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    for a in alerts:
        name = a["alert"]
        assert re.fullmatch(r"\d+[smh]", a.get("for", "")), f"{name}: no `for:`"
        assert a["labels"]["severity"] in ("critical", "warning"), name
        assert a["annotations"]["summary"], name
        assert a["annotations"]["description"], name
        if "site_id" in a["expr"] or a["expr"].startswith("vpp:site_"):
            assert "$labels.site_id" in a["annotations"]["summary"], f"{name} names no site"
    untested = {a["alert"] for a in alerts} - tested
    assert not untested, f"alerts without a promtool unit test in tests.yml: {sorted(untested)}"


def test_dispatch_states_in_the_rules_exist() -> None:
    for rule in _rules():
        for values in re.findall(r'state=~?"([^"]*)"', rule["expr"]):
            unknown = set(values.split("|")) - OUTCOME_STATES
            assert not unknown, f"{rule.get('alert') or rule['record']}: no states {unknown}"


def _dashboard_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and variable query of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for p in board["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r}", t["expr"]))
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", v["definition"])
            assert found, f"variable {v['name']}: unexpected query {v['definition']!r}"
            out.append((f"variable {v['name']}", found[1]))
    return out


def test_dashboard_is_valid_and_every_panel_queries_prometheus() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in board["panels"]:
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{p['title']}: off the grid"
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["expr"].strip(), f"panel {p['title']!r}: empty query"
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    titles = " | ".join(p["title"] for p in board["panels"])
    for wanted in ("Gateways connected", "Readings per second", "Telemetry lag", "Stalest sites"):
        assert wanted in titles


def test_rules_and_dashboard_use_only_metrics_a_headend_exports(
    headend_exported_names: set[str],
) -> None:
    exported = headend_exported_names
    # what the operator asked for by name (issue 19) is among them
    assert {
        "vpp_telemetry_lag_seconds_bucket",
        "vpp_site_last_reading_timestamp_seconds",
        "vpp_headend_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "vpp_database_up",
        "vpp_ingest_queue_capacity_rows",
    } <= exported
    recorded = {r["record"] for r in _rules() if "record" in r}
    known = exported | recorded | PROMETHEUS_OWN
    uses = [(r.get("alert") or r["record"], r["expr"]) for r in _rules()] + _dashboard_exprs()
    missing = {f"{where}: {name}" for where, expr in uses for name in metric_names(expr) - known}
    assert not missing, "not exported by a headend nor recorded:\n" + "\n".join(sorted(missing))
    # and the dashboard leaves no recording rule it relies on to chance
    assert all(metric_names(e) for _, e in uses), "an expression selects no metric"
