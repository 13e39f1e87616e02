"""A setpoint's time in force (issue 16), end to end: real headend, real gateway processes.

Duration ends on the gateway's clock and the dispatch becomes ``completed``; a cancel
releases what the dispatch set; a pending dispatch cancelled is never delivered; the
gateway's fail-safe releases everything when the headend is gone; a superseding setpoint
takes over with no release in between; a gateway restart honours the time left; a headend
restart changes nothing on site.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from e2e_system import System, eventually
from launcher import FAST_GATEWAY, write_site

TICK_S = 1.0
BESS = "tf-bess-1"
PV = "tf-pv-1"
#: How late a release may come after its end: one telemetry tick, plus the time the ack
#: and the headend's write take on a loaded 2-core machine.
LATE_S = TICK_S + 1.0


def _site(tmp_path: Path, grpc_port: int, *, failsafe_after_s: float | None = None) -> Path:
    assets: list[dict[str, object]] = [
        {
            "asset_id": BESS,
            "kind": "bess",
            "capacity_kw": 100.0,
            "energy_kwh": 400.0,
            "simulator": {"initial_soc_pct": 60},
        },
        {"asset_id": PV, "kind": "pv", "capacity_kw": 50.0},
    ]
    path = write_site(
        tmp_path / "tf.yaml",
        "tf",
        assets,
        headend_port=grpc_port,
        tick_s=TICK_S,
        gateway=dict(FAST_GATEWAY),
    )
    if failsafe_after_s is not None:
        path.write_text(path.read_text() + f"failsafe_after_s: {failsafe_after_s}\n")
    return path


async def _up(system: System, tmp_path: Path, **site: Any) -> Path:
    path = _site(tmp_path, system.grpc_port, **site)
    await system.launcher.import_sites(system.db_url, [path])
    await system.start_headend()
    await system.launcher.gateway(path).start()
    await system.wait_connected("tf")
    await system.wait_telemetry([BESS, PV])
    return path


async def _post(system: System, body: dict[str, Any]) -> str:
    resp = await system.http.post("/dispatch", json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["dispatch_id"])


async def _cancel(system: System, dispatch_id: str) -> httpx.Response:
    return await system.http.post(f"/dispatch/{dispatch_id}/cancel", json={})


def _event_at(d: dict[str, Any], state: str, scope: str = "dispatch") -> datetime:
    found = [e for e in d["events"] if e["state"] == state and e["scope"] == scope]
    assert found, (state, d["events"])
    return datetime.fromisoformat(found[0]["at"])


async def _setpoint_cleared(system: System, asset_id: str, after_seq: int) -> dict[str, Any]:
    """The first latest reading past ``after_seq`` that shows no setpoint in force."""

    async def probe() -> dict[str, Any] | None:
        r = await system.latest(asset_id)
        ok = r is not None and r["seq"] > after_seq and r["setpoint_kw"] is None
        return r if ok else None

    return await eventually(probe, timeout=15, what=f"{asset_id} setpoint_kw null")


async def _in_force(system: System, asset_id: str, setpoint_id: str) -> dict[str, Any]:
    """The first latest reading that shows ``setpoint_id`` in force."""

    async def probe() -> dict[str, Any] | None:
        r = await system.latest(asset_id)
        return r if r is not None and r["setpoint_id"] == setpoint_id else None

    return await eventually(probe, timeout=15, what=f"{asset_id} under {setpoint_id}")


async def test_a_duration_ends_on_the_gateway_and_the_dispatch_completes(
    system: System, tmp_path: Path
) -> None:
    await _up(system, tmp_path)
    did = await _post(system, {"asset_id": BESS, "power_kw": 40.0, "duration_s": 3})
    applied = await system.wait_dispatch(did, states={"applied"})
    assert applied["duration_s"] == 3
    seq = (await system.latest(BESS) or {})["seq"]

    done = await system.wait_dispatch(did, states={"completed"}, timeout=15)
    held = (_event_at(done, "completed") - _event_at(done, "applied")).total_seconds()
    print(f"\n[duration] 3 s in force; completed {held:.2f} s after applied")
    assert 3.0 - 0.5 <= held <= 3.0 + LATE_S, done["events"]
    reading = await _setpoint_cleared(system, BESS, seq)
    assert reading["setpoint_kw"] is None
    # a BESS without fallback_kw goes back to idle
    assert abs(reading["power_kw"]) < 1e-6, reading


async def test_cancel_releases_what_the_dispatch_set_and_answers_the_same_twice(
    system: System, tmp_path: Path
) -> None:
    await _up(system, tmp_path)
    did = await _post(system, {"site_id": "tf", "power_kw": 60.0})
    await system.wait_dispatch(did, states={"applied"})
    seq = (await system.latest(BESS) or {})["seq"]

    first = await _cancel(system, did)
    assert first.status_code == 202, first.text
    assert first.json()["state"] in ("cancelling", "cancelled"), first.json()
    done = await system.wait_dispatch(did, states={"cancelled"})
    await _setpoint_cleared(system, BESS, seq)
    again = await _cancel(system, did)
    assert again.status_code == 202, again.text
    assert again.json()["state"] == "cancelled"
    assert [e["state"] for e in done["events"] if e["scope"] == "dispatch"][-1] == "cancelled"

    # a dispatch whose duration ended cannot be cancelled any more
    short = await _post(system, {"asset_id": BESS, "power_kw": 10.0, "duration_s": 1})
    await system.wait_dispatch(short, states={"completed"}, timeout=15)
    late = await _cancel(system, short)
    assert late.status_code == 409, late.text
    assert "completed" in late.text


async def test_a_pending_dispatch_cancelled_is_never_delivered(
    system: System, tmp_path: Path
) -> None:
    path = _site(tmp_path, system.grpc_port)
    await system.launcher.import_sites(system.db_url, [path])
    await system.start_headend()
    did = await _post(system, {"asset_id": BESS, "power_kw": 30.0, "ttl_s": 120})
    assert (await system.get(f"/dispatch/{did}"))["state"] == "pending"
    resp = await _cancel(system, did)
    assert resp.status_code == 202, resp.text
    assert resp.json()["state"] == "cancelled"

    gw = await system.launcher.gateway(path).start()
    await system.wait_connected("tf")
    # a dispatch made after connecting is delivered: everything before it was handled
    probe = await _post(system, {"asset_id": BESS, "power_kw": 5.0})
    await system.wait_dispatch(probe, states={"applied"})
    assert did not in gw.log(), "the cancelled setpoint reached the gateway"
    assert (await system.get(f"/dispatch/{did}"))["state"] == "cancelled"


async def test_the_fail_safe_releases_when_the_headend_is_gone(
    system: System, tmp_path: Path
) -> None:
    path = await _up(system, tmp_path, failsafe_after_s=5)
    gw = system.launcher.procs[-1]
    assert gw.name == f"gateway-{path.stem}"
    did = await _post(system, {"asset_id": BESS, "power_kw": 50.0})
    await system.wait_dispatch(did, states={"applied"})

    await _in_force(system, BESS, did)
    killed = datetime.now(UTC)
    await system.headend.kill()
    line = await gw.wait_for_log(r"[^\n]*event=failsafe[^\n]*", timeout=20)
    assert BESS in line, line
    assert did in line, line
    took = (_ts(line) - killed).total_seconds()
    print(f"\n[failsafe] 5 s: released {took:.2f} s after the headend was killed")
    # counted from the last message heard: up to one heartbeat (1 s) before the kill
    assert 5.0 - 1.0 - 0.1 <= took <= 5.0 + LATE_S, (killed, line)

    await system.start_headend()
    d = await system.wait_dispatch(did, states={"released"}, timeout=30)
    assert any("fail" in (e["detail"] or "") for e in d["events"] if e["state"] == "released")

    # the readings spooled while the headend was down are replayed and show the release:
    # the setpoint in force, then none, in seq order with no gap
    async def replayed() -> list[dict[str, Any]] | None:
        hist = await system.get(f"/telemetry/{BESS}/history", limit=1000)
        rows = sorted(hist["readings"], key=lambda r: r["seq"])
        spooled = [r for r in rows if datetime.fromisoformat(r["ts"]) > killed]
        return rows if len(spooled) >= 5 and rows[-1]["setpoint_kw"] is None else None

    rows = await eventually(replayed, timeout=20, what="the spooled readings stored")
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
    held = [r["setpoint_kw"] for r in rows if r["setpoint_id"] == did]
    assert held, rows
    assert set(held) == {50.0}, rows
    last_held = max(i for i, r in enumerate(rows) if r["setpoint_id"] == did)
    after = rows[last_held + 1 :]
    assert after, rows
    assert all(r["setpoint_kw"] is None for r in after), rows


async def test_a_superseding_setpoint_takes_over_with_no_release_between(
    system: System, tmp_path: Path
) -> None:
    await _up(system, tmp_path)
    first = await _post(system, {"asset_id": BESS, "power_kw": 20.0, "duration_s": 4})
    await system.wait_dispatch(first, states={"applied"})
    await _in_force(system, BESS, first)
    second = await _post(system, {"asset_id": BESS, "power_kw": 35.0})
    await system.wait_dispatch(second, states={"applied"})
    await _in_force(system, BESS, second)
    # the first one's end comes and goes: nothing of it is left to release
    await system.wait_dispatch(first, states={"completed"}, timeout=15)
    latest = await system.latest(BESS)
    assert latest is not None
    after_end = latest["seq"]
    await system.wait_telemetry([BESS], min_seq=after_end + 1)

    hist = await system.get(f"/telemetry/{BESS}/history", limit=1000)
    seen = [(r["setpoint_id"], r["setpoint_kw"]) for r in reversed(hist["readings"])]
    start = next(i for i, (sid, _) in enumerate(seen) if sid == first)
    tail = seen[start:]
    # from the first setpoint on, every reading has one in force: first, then second
    assert all(kw is not None for _, kw in tail), tail
    assert {sid for sid, _ in tail} == {first, second}, tail
    assert tail[-1] == (second, 35.0), tail


async def test_a_gateway_restarted_mid_duration_keeps_the_original_end(
    system: System, tmp_path: Path
) -> None:
    await _up(system, tmp_path)
    gw = system.launcher.procs[-1]
    did = await _post(system, {"asset_id": BESS, "power_kw": 45.0, "duration_s": 6})
    applied = await system.wait_dispatch(did, states={"applied"})
    await gw.stop()
    await gw.start()
    line = await gw.wait_for_log(r"[^\n]*event=control_restored[^\n]*", timeout=15)
    assert f"setpoint_id={did}" in line, line
    assert BESS in line, line
    done = await system.wait_dispatch(did, states={"completed"}, timeout=20)
    held = (_event_at(done, "completed") - _event_at(applied, "applied")).total_seconds()
    print(f"\n[restart mid-duration] 6 s in force; completed {held:.2f} s after applied")
    assert 6.0 - 0.5 <= held <= 6.0 + LATE_S, done["events"]


async def test_a_gateway_restarted_after_the_end_releases_at_start(
    system: System, tmp_path: Path
) -> None:
    await _up(system, tmp_path)
    gw = system.launcher.procs[-1]
    did = await _post(system, {"asset_id": BESS, "power_kw": 25.0, "duration_s": 2})
    await system.wait_dispatch(did, states={"applied"})
    reading = await _in_force(system, BESS, did)
    await gw.stop()
    assert reading["setpoint_ends_at"] is not None, reading
    ends = datetime.fromisoformat(reading["setpoint_ends_at"])

    async def past() -> bool:
        return datetime.now(ends.tzinfo) > ends

    await eventually(past, timeout=10, what="the setpoint's end")
    await gw.start()
    line = await gw.wait_for_log(r"event=setpoint_released[^\n]*", timeout=15)
    assert did in line, line
    await system.wait_dispatch(did, states={"completed"}, timeout=20)
    seq = (await system.latest(BESS) or {})["seq"]
    await _setpoint_cleared(system, BESS, seq)


def _ts(line: str) -> datetime:
    """The ``ts=`` of a gateway log line."""
    field = next(p for p in line.split() if p.startswith("ts="))
    return datetime.fromisoformat(field[3:].strip('"'))


async def test_a_headend_restart_changes_nothing_on_site(system: System, tmp_path: Path) -> None:
    await _up(system, tmp_path)
    gw = system.launcher.procs[-1]
    did = await _post(system, {"asset_id": BESS, "power_kw": 30.0, "duration_s": 8})
    applied = await system.wait_dispatch(did, states={"applied"})
    await _in_force(system, BESS, did)

    await system.headend.kill()
    await system.start_headend()
    await system.wait_connected("tf")
    done = await system.wait_dispatch(did, states={"completed"}, timeout=20)
    held = (_event_at(done, "completed") - _event_at(applied, "applied")).total_seconds()
    print(f"\n[headend restart] 8 s in force; completed {held:.2f} s after applied")
    assert 8.0 - 0.5 <= held <= 8.0 + LATE_S, done["events"]
    # the gateway held the setpoint throughout: applied once, never re-applied, never released
    log = gw.log_since_start()
    assert log.count(f"event=setpoint setpoint_id={did}") == 1, log[-3000:]
    assert "event=failsafe " not in log
    hist = await system.get(f"/telemetry/{BESS}/history", limit=1000)
    rows = sorted(hist["readings"], key=lambda r: r["seq"])
    first = next(i for i, r in enumerate(rows) if r["setpoint_id"] == did)
    last = max(i for i, r in enumerate(rows) if r["setpoint_id"] == did)
    assert all(r["setpoint_kw"] == 30.0 for r in rows[first : last + 1]), rows
