"""Fixtures of the monitoring checks: Debian's Prometheus tools, and the metric names a real
headend exports (the names the shipped rules and dashboard may use)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from headend_http import app_client
from prometheus_client.parser import text_string_to_metric_families

from vpp_headend import Headend, Settings, create_app

# Sample names each metric type exposes, for a family scraped without samples (a labelled
# metric nothing has touched yet: only its HELP and TYPE lines are written).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "stateset": ("",),
    "unknown": ("",),
}


def tool(name: str) -> Path:
    """``/usr/bin/<name>`` from Debian's prometheus package; a clear failure when missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if found is None:
        pytest.fail(
            f"{name} is missing: the monitoring checks run Debian's Prometheus "
            "(apt-get install -y prometheus; .ci/run installs it when run as root)",
            pytrace=False,
        )
    return Path(found)


@pytest.fixture(scope="session")
def promtool() -> Path:
    return tool("promtool")


@pytest.fixture(scope="session")
def prometheus() -> Path:
    return tool("prometheus")


def exported_names(text: str) -> set[str]:
    """Every sample name an exposition offers, a family without samples by its type."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.samples:
            names.update(s.name for s in family.samples)
        else:
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


@pytest.fixture
async def headend_exported_names(db_url: str) -> set[str]:
    """Every sample name GET /metrics of a real headend offers (default settings)."""
    settings = Settings(database_url=db_url, http_port=0, grpc_port=0)
    async with Headend.open(settings) as headend, app_client(create_app(settings, headend)) as http:
        await http.get("/metrics")  # the first scrape: its own request is timed after it
        resp = await http.get("/metrics")
        assert resp.status_code == 200, resp.text
    return exported_names(resp.text)
