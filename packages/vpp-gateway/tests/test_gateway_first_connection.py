"""A site's first connection to a real headend (`vpp-headend serve` on a real PostgreSQL):
`vpp-gateway check` says whether the site is registered, and `vpp-gateway run` against a
headend that does not know the site says how to register it and keeps trying."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from headend_waits import eventually
from launcher import BIN, FAST_GATEWAY, Launcher, Proc, free_port, write_site

ASSETS: list[dict[str, object]] = [
    {"asset_id": "f-pv-1", "kind": "pv", "capacity_kw": 80},
    {"asset_id": "f-bess-1", "kind": "bess", "capacity_kw": 50, "energy_kwh": 100},
]


async def gateway_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``vpp-gateway ARGS`` as a user runs it: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "vpp-gateway"),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def viewer_token(db_url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "vpp-headend"),
        *("tokens", "create", "--role", "viewer", "--name", "check", "--database-url", db_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    return out.decode().strip().splitlines()[-1]


@pytest.fixture
async def headend(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[Launcher, Proc]]:
    """A `vpp-headend serve` process whose registry is empty."""
    launcher = Launcher(tmp_path)
    proc = launcher.headend(db_url)
    proc.env["VPP_TOKEN_CACHE_S"] = "0.1"  # a token created by the test counts at once
    await proc.start()
    try:
        await proc.wait_for_log(r"event=listening", timeout=60)
        yield launcher, proc
    finally:
        await launcher.stop_all()


def site_file(tmp_path: Path, proc: Proc, assets: list[dict[str, object]] = ASSETS) -> Path:
    return write_site(
        tmp_path / "site-f.yaml",
        "site-f",
        assets,
        headend_port=Launcher.grpc_port(proc),
        tick_s=0.5,
        gateway=FAST_GATEWAY,
    )


async def test_check_says_whether_the_site_is_registered(
    tmp_path: Path, db_url: str, headend: tuple[Launcher, Proc]
) -> None:
    launcher, proc = headend
    url = Launcher.http_url(proc)
    path = site_file(tmp_path, proc)

    # without a URL it says it did not look
    code, out, err = await gateway_cli("check", str(path))
    assert code == 0, err
    assert "ok: headend 127.0.0.1:" in out
    assert "not checked: whether site site-f is registered" in out
    assert "--headend-url" in out

    # not in the registry: an error that names the fix
    code, out, err = await gateway_cli("check", str(path), "--headend-url", url)
    assert code == 1, out + err
    assert "ok: headend 127.0.0.1:" in out  # the gRPC port answers all the same
    assert "error: site site-f is not registered on the headend" in err
    assert f"vpp-headend assets import {path}" in err

    await launcher.import_sites(db_url, [path])
    code, out, err = await gateway_cli("check", str(path), "--headend-url", url + "/")
    assert code == 0, err
    assert "ok: site site-f is registered, 2 asset(s)" in out
    assert err == ""

    # an asset the registry does not have yet is rejected when the gateway registers
    grown = site_file(tmp_path, proc, [*ASSETS, {"asset_id": "f-ev-1", "kind": "ev_charger"}])
    code, out, err = await gateway_cli("check", str(grown), "--headend-url", url)
    assert code == 0, err
    assert "not in the headend's registry: f-ev-1" in err
    assert f"re-import: vpp-headend assets import {grown}" in err

    # with a token in the database the REST API wants one: --token, or from the environment
    token = await viewer_token(db_url)
    answer: tuple[int, str, str] = (0, "", "")

    async def refused() -> bool:  # once the headend sees the token (its lookup cache)
        nonlocal answer
        answer = await gateway_cli("check", str(path), "--headend-url", url)
        return answer[0] == 1

    await eventually(refused, 20, lambda: f"REST still open to anyone: {answer}", every=0.1)
    code, out, err = answer
    assert "not checked whether site site-f is registered" in err
    assert "needs a token (401): --token or VPP_GATEWAY_TOKEN" in err
    code, out, err = await gateway_cli("check", str(path), "--headend-url", url, "--token", token)
    assert code == 0, err
    assert "is registered" in out
    code, out, err = await gateway_cli(
        "check", str(path), env={"VPP_GATEWAY_HEADEND_URL": url, "VPP_GATEWAY_TOKEN": token}
    )
    assert code == 0, err
    assert "is registered" in out

    # nothing listening at the URL: it says it could not check
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = await gateway_cli("check", str(path), "--headend-url", nowhere)
    assert code == 1
    assert f"not checked whether site site-f is registered: cannot reach {nowhere}" in err


async def test_run_against_a_headend_without_the_site_names_the_import_and_keeps_trying(
    tmp_path: Path, db_url: str, headend: tuple[Launcher, Proc]
) -> None:
    launcher, proc = headend
    path = site_file(tmp_path, proc)
    gateway = await launcher.gateway(path).start()
    line = await gateway.wait_for_log(r"[^\n]*event=site_not_registered[^\n]*", timeout=30)
    assert "level=error" in line
    assert "site_id=site-f" in line
    assert f'fix="on the headend: vpp-headend assets import {path}"' in line
    assert "event=asset_rejected" not in gateway.log()  # one line, not one per asset
    # the headend's own words name the fix too (in the disconnect reason)
    await gateway.wait_for_log(r"event=disconnected [^\n]*vpp-headend assets import", timeout=30)

    # it keeps retrying: once the site is imported it connects with every asset
    await launcher.import_sites(db_url, [path])
    await gateway.wait_for_log(r"event=connected [^\n]*accepted=2 rejected=0", timeout=30)
    assert await gateway.stop() == 0
