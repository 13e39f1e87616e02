"""A real Prometheus on the shipped rules, scraping a real headend: when a site's gateway
stops, VppGatewayOffline fires for that site.

Everything is a separate process started as an operator would: ``vpp-headend serve``,
``vpp-gateway run`` for a small site reporting twice a second, and Debian's
``prometheus`` scraping /metrics every second and evaluating every second. The rules are
the shipped file with only that alert's threshold and ``for:`` shortened (5 min → 5 s,
1 min → 1 s), so the test checks the expressions, labels and annotations that ship.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2e_system import System, eventually
from launcher import Launcher, Proc, free_port

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus" / "rules.yml"
SITE = "mon-site"
OFFLINE_AFTER_S = 5


def shortened_rules(alert: str, threshold: tuple[str, str], for_: str) -> dict[str, Any]:
    """The shipped rules with ``alert``'s threshold text replaced (it must occur once in
    its expression, so a change to the shipped rule fails here, loudly) and its ``for:``."""
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    [rule] = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    old, new = threshold
    assert rule["expr"].count(old) == 1, f"{alert}: {old!r} not once in {rule['expr']!r}"
    rule["expr"] = rule["expr"].replace(old, new)
    rule["for"] = for_
    return doc


@pytest.fixture
async def system(tmp_path: Path, db_url: str) -> AsyncIterator[System]:
    launcher = Launcher(tmp_path)
    sys_ = System(launcher, db_url, launcher.headend(db_url))
    try:
        yield sys_
    finally:
        await sys_.close()


def start_prometheus(workdir: Path, binary: Path, launcher: Launcher, target: str) -> Proc:
    """Prometheus scraping ``target`` every second with the test's rules (not started)."""
    rules = workdir / "rules.yml"
    rules.write_text(
        yaml.safe_dump(
            shortened_rules("VppGatewayOffline", ("> 300", f"> {OFFLINE_AFTER_S}"), "1s"),
            sort_keys=False,
        )
    )
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": "vpp-headend", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    port = free_port()
    proc = Proc(
        "prometheus",
        [
            str(binary),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        workdir / "prometheus.log",
    )
    proc.env["PROMETHEUS_URL"] = f"http://127.0.0.1:{port}"
    launcher.procs.append(proc)  # stopped with the rest
    return proc


async def test_gateway_offline_alert_fires_for_the_stopped_site(
    system: System, tmp_path: Path, prometheus: Path
) -> None:
    launcher = system.launcher
    site_file, asset_ids = launcher.gateway_mode(SITE, 2, headend_port=system.grpc_port, tick_s=0.5)
    await launcher.import_sites(system.db_url, [site_file])
    await system.start_headend()
    gateway = await launcher.gateway(site_file).start()
    await system.wait_telemetry(asset_ids, min_seq=2)

    target = f"127.0.0.1:{Launcher.http_port(system.headend)}"
    prom = await start_prometheus(tmp_path, prometheus, launcher, target).start()
    api = httpx.AsyncClient(base_url=prom.env["PROMETHEUS_URL"], timeout=5.0)
    try:
        await _until_scraping(api, prom, target)
        # The rule sees the site, and while its gateway runs the alert stays quiet.
        age = await _until_site_age(api, prom)
        assert age < OFFLINE_AFTER_S, f"{SITE} already {age} s stale with its gateway running"
        assert await _offline_alert(api) is None

        await gateway.stop()
        alert = await eventually(
            lambda: _offline_alert(api, state="firing"),
            timeout=30,
            what=f"VppGatewayOffline firing for {SITE} after its gateway stopped",
        )
    finally:
        await api.aclose()
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"].startswith(f"Site {SITE} has sent no telemetry for ")
    assert float(alert["value"]) > OFFLINE_AFTER_S


async def _until_scraping(api: httpx.AsyncClient, prom: Proc, target: str) -> None:
    """Prometheus answers and its one target, the headend, is scraped healthy."""

    async def up() -> bool:
        if not prom.running:
            raise AssertionError(f"prometheus exited:\n{prom.log()[-3000:]}")
        try:
            targets = (await api.get("/api/v1/targets")).json()["data"]["activeTargets"]
        except httpx.TransportError:  # not listening yet
            return False
        return any(
            t["scrapeUrl"] == f"http://{target}/metrics" and t["health"] == "up" for t in targets
        )

    await eventually(up, timeout=20, what=f"Prometheus scraping {target} ({prom.log_path})")


async def _until_site_age(api: httpx.AsyncClient, prom: Proc) -> float:
    """vpp:site_last_reading_age_seconds of the site, once the rules have recorded it."""

    async def age() -> list[float] | None:  # in a list: an age of 0.0 is found too
        query = f'vpp:site_last_reading_age_seconds{{site_id="{SITE}"}}'
        body = (await api.get("/api/v1/query", params={"query": query})).json()
        result = body["data"]["result"]
        return [float(result[0]["value"][1])] if result else None

    found = await eventually(
        age, timeout=20, what=f"the age of {SITE} recorded (log: {prom.log_path})"
    )
    return found[0]


async def _offline_alert(api: httpx.AsyncClient, state: str | None = None) -> dict[str, Any] | None:
    """The VppGatewayOffline alert of the site (pending or firing; or in ``state``)."""
    alerts = (await api.get("/api/v1/alerts")).json()["data"]["alerts"]
    for a in alerts:
        labels = a["labels"]
        ours = labels.get("alertname") == "VppGatewayOffline" and labels.get("site_id") == SITE
        if ours and (state is None or a["state"] == state):
            return dict(a)
    return None
