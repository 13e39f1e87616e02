"""A real system for end-to-end tests: one headend process, gateway processes, PostgreSQL.

Everything goes through the public surfaces a user has: the CLIs (`vpp-headend serve`,
`vpp-headend assets import`, `vpp-gateway run`), the REST API, the log lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from launcher import Launcher, Proc

T = TypeVar("T")

#: Final dispatch states.
FINAL = {"applied", "failed", "rejected", "expired", "superseded"}


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what} (last: {last!r})")
        await asyncio.sleep(0.1)


@dataclass
class System:
    """A headend (started by `start`) plus whatever gateways a test launches."""

    launcher: Launcher
    db_url: str
    headend: Proc
    http: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(base_url=Launcher.http_url(self.headend), timeout=10.0)

    @property
    def grpc_port(self) -> int:
        return Launcher.grpc_port(self.headend)

    async def start_headend(self) -> None:
        await self.headend.start()
        await self.headend.wait_for_log(r"event=listening", timeout=30)

    async def close(self) -> None:
        await self.launcher.stop_all()
        await self.http.aclose()

    # -- REST ------------------------------------------------------------------------
    async def get(self, path: str, **params: Any) -> Any:
        resp = await self.http.get(path, params=params or None)
        resp.raise_for_status()
        return resp.json()

    async def get_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list (``{"items", "next"}``), following ``next``."""
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {**params, "limit": 1000}
        while True:
            page = await self.get(path, **query)
            items += page["items"]
            if page["next"] is None:
                return items
            query["cursor"] = page["next"]

    async def get_or_none(self, path: str) -> Any:
        resp = await self.http.get(path)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()

    async def dispatch(self, power_kw: float, **target: Any) -> str:
        resp = await self.http.post("/dispatch", json={"power_kw": power_kw, **target})
        assert resp.status_code == 202, resp.text
        return str(resp.json()["dispatch_id"])

    async def wait_dispatch(
        self, dispatch_id: str, states: Iterable[str] = ("applied",), timeout: float = 20.0
    ) -> dict[str, Any]:
        wanted = set(states)

        async def probe() -> dict[str, Any] | None:
            d: dict[str, Any] = await self.get(f"/dispatch/{dispatch_id}")
            return d if d["state"] in wanted else None

        return await eventually(probe, timeout=timeout, what=f"dispatch {dispatch_id} in {wanted}")

    async def latest(self, asset_id: str) -> dict[str, Any] | None:
        out: dict[str, Any] | None = await self.get_or_none(f"/telemetry/{asset_id}")
        return out

    async def latest_all(self, asset_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        ids = list(asset_ids)
        rows = await asyncio.gather(*(self.latest(a) for a in ids))
        return dict(zip(ids, rows, strict=True))

    async def wait_telemetry(
        self, asset_ids: Iterable[str], *, min_seq: int = 1, timeout: float = 20.0
    ) -> dict[str, dict[str, Any]]:
        """Until every asset has a latest reading with seq ≥ ``min_seq``."""
        ids = list(asset_ids)

        async def probe() -> dict[str, dict[str, Any]] | None:
            rows = await self.latest_all(ids)
            if all(r is not None and r["seq"] >= min_seq for r in rows.values()):
                return {k: v for k, v in rows.items() if v is not None}
            return None

        return await eventually(probe, timeout=timeout, what=f"telemetry seq≥{min_seq}")

    async def gateway_row(self, site_id: str) -> dict[str, Any]:
        rows = await self.get_all("/gateways")
        return next(r for r in rows if r["site_id"] == site_id)

    async def wait_connected(
        self, site_id: str, *, epoch_above: int = 0, timeout: float = 20.0
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            row = await self.gateway_row(site_id)
            ok = row["connected"] and (row["epoch"] or 0) > epoch_above
            return row if ok else None

        return await eventually(probe, timeout=timeout, what=f"{site_id} connected")

    async def history_seqs(self, asset_id: str) -> list[int]:
        h = await self.get(f"/telemetry/{asset_id}/history", limit=10000)
        return [r["seq"] for r in h["readings"]]

    async def metrics(self) -> str:
        resp = await self.http.get("/metrics")
        resp.raise_for_status()
        return resp.text


def metric(text: str, name: str, label: str = "") -> float:
    """Sum of the samples of ``name`` (whose labels contain ``label``) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, _, value = line.rpartition(" ")
        base, _, labels = head.partition("{")
        if base == name and label in labels:
            total += float(value)
    return total


def tcp_connections(pid: int, remote_port: int) -> int:
    """ESTABLISHED TCP connections of process ``pid`` to ``remote_port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        name = str(target)
        if name.startswith("socket:["):
            inodes.add(name[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            rem_port = int(cols[2].rsplit(":", 1)[1], 16)
            if cols[3] == "01" and rem_port == remote_port and cols[9] in inodes:
                count += 1
    return count
