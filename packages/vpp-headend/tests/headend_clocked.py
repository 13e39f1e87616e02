"""A real headend on a clock the test moves (its injected clock), with a REST client:
for the sweeper and the delivered-power measurement, which run on the headend's clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from headend_http import app_client

from vpp_headend import Headend, Settings, create_app
from vpp_protocol.sitefile import parse_site_file


@dataclass
class ShiftedClock:
    """Wall time plus an offset the test moves forward (the headend's injected clock)."""

    offset: timedelta = field(default_factory=timedelta)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Clocked:
    headend: Headend
    http: Any
    clock: ShiftedClock

    @property
    def grpc_port(self) -> int:
        return self.headend.grpc_port

    async def import_site(self, yaml_text: str) -> None:
        await self.headend.registry.import_site(parse_site_file(yaml_text))

    async def dispatch(self, **body: Any) -> dict[str, Any]:
        """POST /dispatch; the 202 body."""
        resp = await self.http.post("/dispatch", json=body)
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    async def dispatch_id(self, **body: Any) -> str:
        return str((await self.dispatch(**body))["dispatch_id"])

    async def get(self, dispatch_id: str) -> dict[str, Any]:
        return dict((await self.http.get(f"/dispatch/{dispatch_id}")).json())

    async def wait(
        self, eventually: Any, dispatch_id: str, check: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """GET the dispatch until ``check`` holds; the body that passed."""
        body: dict[str, Any] = {}

        async def reached() -> bool:
            nonlocal body
            body = await self.get(dispatch_id)
            return check(body)

        await eventually(reached, 5, f"dispatch {dispatch_id}: condition never met")
        return body


@asynccontextmanager
async def clocked_headend(settings: Settings) -> AsyncIterator[Clocked]:
    """A started headend with ``settings`` on a `ShiftedClock`, and its REST client."""
    clock = ShiftedClock()
    async with (
        Headend.open(settings, clock=clock) as headend,
        app_client(create_app(settings, headend)) as http,
    ):
        yield Clocked(headend, http, clock)
