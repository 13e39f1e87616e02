"""Acceptance: real headend + gateway processes + PostgreSQL, driven through the REST API.

One gateway serves many assets over one gRPC stream; every asset keeps its own telemetry;
a dispatch reaches exactly its target; site and group dispatches split deterministically
and exactly; legacy single-asset agents and multi-asset gateways share one headend.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from e2e_system import System, eventually, tcp_connections

N_ASSETS = 12


def _exact_sum(values: list[float]) -> Decimal:
    return sum((Decimal(repr(v)) for v in values), Decimal(0))


def _allocations(d: dict[str, Any]) -> dict[str, float]:
    return {a["asset_id"]: a["allocation_kw"] for a in d["allocations"]}


def _logged_split(line: str) -> dict[str, float]:
    """The allocations of one gateway ``event=split`` log line."""
    found = re.search(r'allocations="?([^"\s]+)', line)
    assert found, line
    pairs = (part.split("=") for part in found[1].split(","))
    return {k: float(v) for k, v in pairs}


async def _start_site(
    system: System, site_id: str, n: int, groups: tuple[str, ...] = ()
) -> tuple[Any, list[str]]:
    path, ids = system.launcher.gateway_mode(
        site_id, n, headend_port=system.grpc_port, groups=groups
    )
    return path, ids


async def test_one_gateway_serves_many_assets_over_one_stream(system: System) -> None:
    path, ids = await _start_site(system, "site-m", N_ASSETS)
    await system.launcher.import_sites(system.db_url, [path])
    await system.start_headend()
    gw = await system.launcher.gateway(path).start()

    row = await system.wait_connected("site-m")
    assert sorted(row["assets_served"]) == sorted(ids)
    latest = await system.wait_telemetry(ids, min_seq=2)

    # one connection: the gateway process holds exactly one TCP connection to the gRPC port
    conns = tcp_connections(gw.pid, system.grpc_port)
    sessions = [r for r in await system.get_all("/gateways") if r["connected"]]
    print(f"\n[one-stream] {len(ids)} assets, gateway TCP connections to gRPC port: {conns}")
    assert conns == 1, f"{conns} TCP connections from the gateway for {len(ids)} assets"
    assert len(sessions) == 1, sessions
    assert gw.log().count("event=connected") == 1

    # every asset has its own latest reading: right id, own values, no collapse into one
    for asset_id, r in latest.items():
        assert r["asset_id"] == asset_id
        assert r["site_id"] == "site-m"
    values = {(r["power_kw"], r["soc_pct"]) for r in latest.values()}
    assert len(values) == len(ids), f"readings collapsed: {sorted(map(str, values))}"
    bess = [r for a, r in latest.items() if "-bess-" in a]
    assert all(r["soc_pct"] is not None for r in bess)
    assert all(r["soc_pct"] is None for a, r in latest.items() if "-bess-" not in a)
    seqs = await system.history_seqs(ids[0])
    assert seqs == sorted(seqs, reverse=True), "history is newest first"
    assert len(seqs) == len(set(seqs)), "no reading stored twice"


async def test_asset_dispatch_changes_only_that_asset(system: System) -> None:
    path, ids = await _start_site(system, "site-d", N_ASSETS)
    await system.launcher.import_sites(system.db_url, [path])
    await system.start_headend()
    await system.launcher.gateway(path).start()
    before = await system.wait_telemetry(ids, min_seq=2)
    target = next(a for a in ids if "-bess-" in a)

    dispatch_id = await system.dispatch(-40.0, asset_id=target)
    done = await system.wait_dispatch(dispatch_id)
    assert [(a["asset_id"], a["applied_kw"]) for a in done["allocations"]] == [(target, -40.0)]

    # the target reports the new setpoint and power; wait one more tick for everyone
    async def target_changed() -> dict[str, Any] | None:
        r = await system.latest(target)
        return r if r and r["setpoint_id"] == dispatch_id else None

    changed = await eventually(target_changed, what="target telemetry shows the setpoint")
    after = await system.wait_telemetry(ids, min_seq=changed["seq"] + 1)
    assert after[target]["setpoint_kw"] == -40.0
    assert after[target]["power_kw"] == -40.0
    assert before[target]["power_kw"] != -40.0
    unchanged = []
    for asset_id in ids:
        if asset_id == target:
            continue
        b, a = before[asset_id], after[asset_id]
        assert a["setpoint_id"] == b["setpoint_id"] is None, asset_id
        assert a["setpoint_kw"] == b["setpoint_kw"], asset_id
        # steady simulators: power only moves when its own setpoint does (PV sits on its
        # flat solar noon; allow the curve's drift over a few seconds)
        assert abs(a["power_kw"] - b["power_kw"]) <= 0.01 * max(1.0, abs(b["power_kw"])), (
            asset_id,
            b["power_kw"],
            a["power_kw"],
        )
        unchanged.append(asset_id)
    assert len(unchanged) == len(ids) - 1
    others = await system.get_all("/dispatches", asset_id=ids[0])
    assert others == [], "no dispatch recorded for an asset that was not targeted"


async def test_site_and_group_dispatch_split_deterministically_and_exactly(
    system: System,
) -> None:
    path_a, ids_a = await _start_site(system, "site-sa", N_ASSETS, groups=("north",))
    path_b, ids_b = await _start_site(system, "site-sb", 6, groups=("north",))
    await system.launcher.import_sites(system.db_url, [path_a, path_b])
    await system.start_headend()
    gw_a = await system.launcher.gateway(path_a).start()
    await system.launcher.gateway(path_b).start()
    await system.wait_telemetry([*ids_a, *ids_b])

    # site dispatch, twice: identical split over the same envelopes, summing exactly to the
    # request (an odd figure, so a rounding error in the split would show).
    site_allocs = []
    for _ in range(2):
        d = await system.wait_dispatch(await system.dispatch(700.3, site_id="site-sa"))
        allocs = _allocations(d)
        assert set(allocs) <= set(ids_a)
        assert _exact_sum(list(allocs.values())) == Decimal("700.3"), allocs
        site_allocs.append(allocs)
    assert site_allocs[0] == site_allocs[1]
    assert "site-sa-meter-5" not in site_allocs[0], "a meter takes no share"
    print(f"\n[site split] 700.3 kW -> {site_allocs[0]}")

    # the gateway logs the split table (one event=split line per split)
    line = await gw_a.wait_for_log(r"event=split [^\n]*target=site:site-sa[^\n]*", count=2)
    assert "allocated_kw=700.3 shortfall_kw=0" in line, line
    logged = _logged_split(line)
    assert logged == site_allocs[1]
    assert _exact_sum(list(logged.values())) == Decimal("700.3")

    # group dispatch across both sites, twice: identical, exact, per site and in total
    group_allocs = []
    for _ in range(2):
        d = await system.wait_dispatch(await system.dispatch(-150.7, group_id="north"))
        assert {dl["site_id"] for dl in d["deliveries"]} == {"site-sa", "site-sb"}
        per_site = {dl["site_id"]: dl["power_kw"] for dl in d["deliveries"]}
        assert _exact_sum(list(per_site.values())) == Decimal("-150.7"), per_site
        allocs = _allocations(d)
        assert _exact_sum(list(allocs.values())) == Decimal("-150.7"), allocs
        for site_id, site_kw in per_site.items():
            in_site = [v for a, v in allocs.items() if a.startswith(site_id + "-")]
            assert _exact_sum(in_site) == Decimal(repr(site_kw)), (site_id, in_site)
        group_allocs.append(allocs)
    assert group_allocs[0] == group_allocs[1]
    print(f"[group split] -150.7 kW -> {group_allocs[0]}")


async def test_legacy_and_gateway_mode_side_by_side(system: System) -> None:
    path, ids = await _start_site(system, "site-mix", 10)
    legacy_paths = system.launcher.legacy_mode("leg", 3, headend_port=system.grpc_port)
    await system.launcher.import_sites(system.db_url, [path, *legacy_paths])
    await system.start_headend()
    legacy = [await system.launcher.gateway(p).start() for p in legacy_paths]
    await system.launcher.gateway(path).start()
    legacy_ids = [p.stem for p in legacy_paths]
    latest = await system.wait_telemetry([*ids, *legacy_ids], min_seq=2)

    rows = {r["site_id"]: r for r in await system.get_all("/gateways") if r["connected"]}
    assert len(rows) == 1 + len(legacy_ids)
    assert sorted(rows["site-mix"]["assets_served"]) == sorted(ids)
    for asset_id in legacy_ids:
        assert rows[asset_id]["assets_served"] == [asset_id]
        assert latest[asset_id]["asset_id"] == asset_id
    for proc in legacy:
        assert "legacy=true" in proc.log()

    # a dispatch to a legacy asset and one to a gateway asset, both applied, independently
    leg_bess = next(a for a in legacy_ids if "-bess-" in a)
    gw_bess = next(a for a in ids if "-bess-" in a)
    d1 = await system.dispatch(12.5, asset_id=leg_bess)
    d2 = await system.dispatch(-7.5, asset_id=gw_bess)
    done1 = await system.wait_dispatch(d1)
    done2 = await system.wait_dispatch(d2)
    assert [(a["asset_id"], a["applied_kw"]) for a in done1["allocations"]] == [(leg_bess, 12.5)]
    assert [(a["asset_id"], a["applied_kw"]) for a in done2["allocations"]] == [(gw_bess, -7.5)]

    async def both_show() -> bool:
        a, b = await system.latest(leg_bess), await system.latest(gw_bess)
        return bool(a and b and a["setpoint_id"] == d1 and b["setpoint_id"] == d2)

    await eventually(both_show, what="both setpoints visible in telemetry")


async def test_a_stopped_gateway_is_shown_disconnected_and_gets_pending_dispatches(
    system: System,
) -> None:
    path, ids = await _start_site(system, "site-r", N_ASSETS)
    await system.launcher.import_sites(system.db_url, [path])
    await system.start_headend()
    gw = system.launcher.gateway(path)
    target = next(a for a in ids if "-bess-" in a)
    for round_ in range(3):  # the headend once missed some graceful stops: try a few
        await gw.start()
        await system.wait_connected("site-r", epoch_above=round_)
        await system.wait_telemetry(ids)
        await gw.stop()

        async def offline() -> dict[str, Any] | None:
            row = await system.gateway_row("site-r")
            return None if row["connected"] else row

        row = await eventually(offline, timeout=10, what=f"site-r offline (round {round_})")
        # a stopping gateway drops its stream without a half-close: "connection_lost"
        assert row["disconnect_reason"] in ("client_closed", "connection_lost"), row
        d = await system.dispatch(-5.0 - round_, asset_id=target)
        assert (await system.get(f"/dispatch/{d}"))["state"] == "pending"
    await gw.start()
    done = await system.wait_dispatch(d)
    assert done["allocations"][0]["applied_kw"] == -7.0
