"""Fixtures of the gateway tests: a real `FakeHeadend` on loopback and fast gateway settings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from vpp_gateway import Agent, GatewaySettings, from_site_file
from vpp_gateway.testing import FakeHeadend
from vpp_protocol.sitefile import parse_site_file

MULTI_SITE = """
site_id: site-t
groups: [vpp-north]
assets:
  - {asset_id: t-pv-1, kind: pv, capacity_kw: 100}
  - {asset_id: t-bess-1, kind: bess, capacity_kw: 50, energy_kwh: 100}
  - {asset_id: t-bess-2, kind: bess, capacity_kw: 150, energy_kwh: 300}
  - {asset_id: t-meter-1, kind: meter}
  - {asset_id: t-load-1, kind: load, capacity_kw: 20}
"""

LEGACY_SITE = """
site_id: site-l
legacy: true
assets:
  - {asset_id: l-bess-1, kind: bess, capacity_kw: 40, energy_kwh: 80}
"""

#: Knobs that keep the suite fast: 0.1 s ticks, sub-second heartbeats and backoff.
FAST: dict[str, Any] = {
    "tick_s": 0.1,
    "heartbeat_s": 0.5,
    "backoff_base_s": 0.05,
    "backoff_cap_s": 0.2,
    "register_timeout_s": 2.0,
    "keepalive_time_s": 5.0,
    "keepalive_timeout_s": 2.0,
}

SettingsFactory = Callable[..., GatewaySettings]


@pytest.fixture
def legacy_site() -> str:
    return LEGACY_SITE


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings for a site YAML text, with fast knobs and a state dir under tmp_path."""

    def make(yaml_text: str = MULTI_SITE, port: int = 1, **overrides: Any) -> GatewaySettings:
        site = parse_site_file(yaml_text, "test-site.yaml")
        base = from_site_file(site, tmp_path / "site.yaml", headend=f"127.0.0.1:{port}")
        values = {**FAST, "state_dir": tmp_path / "state", **overrides}
        return dataclasses.replace(base, **values)

    return make


@pytest.fixture
async def headend(request: pytest.FixtureRequest) -> AsyncIterator[FakeHeadend]:
    """A FakeHeadend heartbeating every 0.5 s, or every ``HEADEND_HEARTBEAT_S`` of the test
    module (tests on a manual clock want its heartbeats out of the way)."""
    h = FakeHeadend(heartbeat_s=getattr(request.module, "HEADEND_HEARTBEAT_S", 0.5))
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture
def running() -> Callable[..., AbstractAsyncContextManager[Agent]]:
    """``async with running(settings) as agent:`` starts an agent and always stops it."""

    @asynccontextmanager
    async def run(settings: GatewaySettings, **kwargs: Any) -> AsyncIterator[Agent]:
        agent = Agent(settings, **kwargs)
        await agent.start()
        try:
            yield agent
        finally:
            await agent.stop()

    return run


@pytest.fixture(autouse=True)
def _gateway_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vpp_gateway")
