"""The system the browser tests drive: a real headend, gateways for the example sites, tokens.

Built on the end-to-end tier's `System` and `Launcher`: the headend and the gateways are
separate processes started through their CLIs, the registry comes from
``vpp-headend assets import`` and the two tokens from ``vpp-headend tokens create``, so
the console is exercised exactly as an operator would meet it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from e2e_system import System, eventually
from launcher import BIN, FAST_GATEWAY, Launcher, Proc
from playwright.async_api import Locator, Page, expect

ROOT = Path(__file__).resolve().parents[2]
#: How long a server-rendered page may take to show something (a loaded page needs none).
PAGE_TIMEOUT_MS = 10_000
#: How long a live update may take to show (SSE: gateway events, telemetry every second).
LIVE_TIMEOUT_MS = 10_000
#: A dispatch to a connected gateway is applied within a second or two; generous.
DISPATCH_TIMEOUT_MS = 20_000


@dataclass
class Console:
    """A running system and what a browser test needs to know about it."""

    system: System
    base_url: str
    operator_token: str
    viewer_token: str
    #: gateway process of each site, by site id (restartable: `ensure_online`)
    gateways: dict[str, Proc]
    #: the site file each gateway runs (examples/<site>.yaml, adapted), by site id
    site_files: dict[str, dict[str, Any]]

    def url(self, path: str) -> str:
        return self.base_url + path

    def asset_ids(self, site_id: str) -> list[str]:
        return [str(a["asset_id"]) for a in self.site_files[site_id]["assets"]]

    def dispatchable_ids(self, site_id: str) -> list[str]:
        """The assets a site dispatch splits over (a meter only measures)."""
        return [
            str(a["asset_id"]) for a in self.site_files[site_id]["assets"] if a["kind"] != "meter"
        ]

    async def connected(self, site_id: str) -> bool:
        """Whether GET /gateways shows the site's gateway connected (a list, or a page of
        ``items``)."""
        body = await self.system.get("/gateways")
        rows = body["items"] if isinstance(body, dict) else body
        return any(r["site_id"] == site_id and r["connected"] for r in rows)

    async def wait_connected(self, site_id: str, connected: bool = True) -> None:
        async def probe() -> bool:
            return await self.connected(site_id) == connected

        state = "connected" if connected else "disconnected"
        await eventually(probe, what=f"{site_id} {state}")

    async def ensure_online(self, site_id: str) -> None:
        """Start the site's gateway unless it runs; wait until the headend has its session."""
        gw = self.gateways[site_id]
        if not gw.running:
            await gw.start()
        await self.wait_connected(site_id)

    async def ensure_offline(self, site_id: str) -> None:
        """Stop the site's gateway (SIGTERM: it says goodbye); wait until the API shows it."""
        await self.gateways[site_id].stop()
        await self.wait_connected(site_id, connected=False)


def example_site(workdir: Path, site_id: str, grpc_port: int) -> tuple[Path, dict[str, Any]]:
    """examples/<site_id>.yaml pointed at this headend, with 1 s telemetry and fast reconnects
    (the console's live values then change every second); returns (path, document)."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / f"{site_id}.yaml").read_text())
    doc["headend"] = {"host": "127.0.0.1", "port": grpc_port}
    doc["telemetry_interval_s"] = 1
    doc["gateway"] = dict(FAST_GATEWAY)
    path = workdir / f"{site_id}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, doc


async def create_token(database_url: str, role: str) -> str:
    """``vpp-headend tokens create --role ROLE``; the token is the last line of its output."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "vpp-headend"),
        "tokens",
        "create",
        "--role",
        role,
        "--name",
        f"browser-{role}",
        "--database-url",
        database_url,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"tokens create --role {role} failed: {err.decode(errors='replace')}")
    token = out.decode().strip().splitlines()[-1]
    assert token.startswith("vpp_"), out
    return token


@asynccontextmanager
async def start_console(
    workdir: Path, database_url: str, sites: Sequence[str] = ()
) -> AsyncIterator[Console]:
    """Headend (tokens enforced: an operator and a viewer token exist) plus one running,
    connected gateway per example site in ``sites``, every asset's telemetry flowing."""
    launcher = Launcher(workdir)
    system = System(launcher, database_url, launcher.headend(database_url))
    try:
        files = {s: example_site(workdir, s, system.grpc_port) for s in sites}
        # three CLI runs of a few seconds each, independent of one another: side by side
        operator, viewer, _ = await asyncio.gather(
            create_token(database_url, "operator"),
            create_token(database_url, "viewer"),
            launcher.import_sites(database_url, [path for path, _ in files.values()])
            if files
            else asyncio.sleep(0),
        )
        system.http.headers["Authorization"] = f"Bearer {operator}"
        await system.start_headend()
        gateways = {s: launcher.gateway(path) for s, (path, _) in files.items()}
        for gw in gateways.values():
            await gw.start()
        console = Console(
            system=system,
            base_url=Launcher.http_url(system.headend),
            operator_token=operator,
            viewer_token=viewer,
            gateways=gateways,
            site_files={s: doc for s, (_, doc) in files.items()},
        )
        for site_id in sites:
            await console.wait_connected(site_id)
        if sites:
            await system.wait_telemetry(
                [a for s in sites for a in console.asset_ids(s)], min_seq=2, timeout=30
            )
        yield console
    finally:
        await system.close()


async def sign_in(page: Page, console: Console, token: str, next_path: str = "/ui/") -> None:
    """Open ``next_path`` signed out (redirected to the sign-in page), sign in with
    ``token`` and land back on ``next_path``."""
    await page.goto(console.url(next_path))
    await expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="), timeout=PAGE_TIMEOUT_MS)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    await page.get_by_label("Access token", exact=True).fill(token)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    # the same page with or without its trailing slash (/ui/ and /ui are the fleet)
    landed = re.compile(re.escape(console.url(next_path.rstrip("/"))) + "/?$")
    await expect(page).to_have_url(landed, timeout=PAGE_TIMEOUT_MS)


async def column(table: Locator, header: str) -> int:
    """The index of the column headed ``header`` (ValueError naming the headers if none)."""
    headers = [h.strip() for h in await table.get_by_role("columnheader").all_inner_texts()]
    try:
        return headers.index(header)
    except ValueError:
        raise ValueError(f"no column {header!r} in {headers}") from None


def cells(row: Locator) -> Locator:
    """The cells of a table row, data cells and row headers alike, in order."""
    return row.locator(":scope > td, :scope > th")


async def cell(table: Locator, row: Locator, header: str) -> Locator:
    """The cell of ``row`` in the column headed ``header``."""
    return cells(row).nth(await column(table, header))


def number(text: str) -> float:
    """A figure as the console shows it ("1,234.5", "−20", "20 kW") as a float."""
    found = re.search(r"[-−]?\d[\d,]*(?:\.\d+)?", text)
    if not found:
        raise ValueError(f"no number in {text!r}")
    return float(found[0].replace(",", "").replace("−", "-"))


__all__ = [
    "DISPATCH_TIMEOUT_MS",
    "LIVE_TIMEOUT_MS",
    "PAGE_TIMEOUT_MS",
    "Console",
    "cell",
    "cells",
    "column",
    "create_token",
    "example_site",
    "number",
    "sign_in",
    "start_console",
]
