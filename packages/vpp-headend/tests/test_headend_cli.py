"""The vpp-headend command: db upgrade, assets import, db prune, serve (a real process)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from vpp_headend.cli import app


def _write_site(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_db_upgrade_then_import_is_idempotent_and_updates(empty_db, tmp_path, site_yaml) -> None:
    runner = CliRunner()
    up = runner.invoke(app, ["db", "upgrade", "--database-url", empty_db, "--log-level", "WARNING"])
    assert up.exit_code == 0, up.output
    site = _write_site(tmp_path, "a.yaml", site_yaml("site-a", ["a-1", "a-2"], groups=["g"]))
    for _ in range(2):
        res = runner.invoke(app, ["assets", "import", str(site), "--database-url", empty_db])
        assert res.exit_code == 0, res.output
    assert "site-a: updated, 2 asset(s), 0 removed, groups: g" in res.output
    site.write_text(site_yaml("site-a", ["a-1"], groups=[]))
    res = runner.invoke(app, ["assets", "import", str(site), "--database-url", empty_db])
    assert "1 asset(s), 1 removed" in res.output
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT asset_id FROM assets").fetchall() == [("a-1",)]
        assert conn.execute("SELECT count(*) FROM group_members").fetchone() == (0,)
    prune = runner.invoke(app, ["db", "prune", "--days", "7", "--database-url", empty_db])
    assert prune.exit_code == 0, prune.output


def test_import_reports_bad_files_and_conflicts(db_url, tmp_path, site_yaml) -> None:
    runner = CliRunner()
    bad = _write_site(tmp_path, "bad.yaml", "site_id: x\nassets: []\n")
    res = runner.invoke(app, ["assets", "import", str(bad), "--database-url", db_url])
    assert res.exit_code == 2
    assert "bad.yaml" in res.output
    a = _write_site(tmp_path, "a.yaml", site_yaml("site-a", ["a-1"]))
    b = _write_site(tmp_path, "b.yaml", site_yaml("site-b", ["a-1"]))
    res = runner.invoke(app, ["assets", "import", str(a), str(b), "--database-url", db_url])
    assert res.exit_code == 1
    assert "registered to site 'site-a'" in res.output


@pytest.mark.parametrize(("loop", "runs_on"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_serve_runs_both_servers_and_shuts_down_cleanly(db_url, tmp_path, loop, runs_on) -> None:
    env = {**os.environ, "VPP_DATABASE_URL": db_url, "VPP_HEARTBEAT_INTERVAL_S": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from vpp_headend.cli import app; app()",
            "serve",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--loop",
            loop,
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        ports = None
        lines = []
        while time.monotonic() < deadline and ports is None:
            line = proc.stderr.readline()
            lines.append(line)
            match = re.search(r"event=listening .*http_port=(\d+) grpc_port=(\d+)", line)
            if match:
                ports = int(match.group(1)), int(match.group(2))
        assert ports is not None, "".join(lines)
        assert f"loop={runs_on}" in lines[-1]
        ready = httpx.get(f"http://127.0.0.1:{ports[0]}/ready", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["grpc_port"] == ports[1]
        metrics = httpx.get(f"http://127.0.0.1:{ports[0]}/metrics", timeout=5).text
        assert f'vpp_event_loop_info{{loop="{runs_on}"}} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "event=stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_an_unknown_event_loop(db_url) -> None:
    res = CliRunner().invoke(app, ["serve", "--database-url", db_url, "--loop", "trio"])
    assert res.exit_code == 2
    assert "event_loop: must be one of auto, uvloop, asyncio, not 'trio'" in res.output


def test_serve_refuses_an_unmigrated_database(empty_db) -> None:
    res = CliRunner().invoke(
        app, ["serve", "--database-url", empty_db, "--http-port", "0", "--grpc-port", "0"]
    )
    assert res.exit_code == 1
    assert "vpp-headend db upgrade" in res.output


def test_migration_0004_indexes_existing_partitions_online_and_reverts(empty_db) -> None:
    from alembic import command

    from vpp_headend.db.migrate import alembic_config, upgrade

    upgrade(empty_db, "0003_rollup")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE telemetry_p20260101 PARTITION OF telemetry"
            " FOR VALUES FROM ('2026-01-01') TO ('2026-01-02')"
        )
        conn.execute(
            "INSERT INTO telemetry (asset_id, seq, ts, received_at, power_kw, status)"
            " SELECT 'a', i, timestamptz '2026-01-01' + i * interval '1 s', now(), 1, 1"
            " FROM generate_series(1, 1000) AS i"
        )
    upgrade(empty_db)

    def brin_indexes(conn: psycopg.Connection) -> dict[str, bool]:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
            " WHERE am.amname = 'brin'"
        ).fetchall()
        return {str(name): bool(valid) for name, valid in rows}

    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert brin_indexes(conn) == {
            "ix_telemetry_ts_brin": True,  # valid: every partition's index is attached
            "telemetry_default_ts_brin": True,
            "telemetry_p20260101_ts_brin": True,
        }
        conn.execute(
            "CREATE TABLE telemetry_p20260102 PARTITION OF telemetry"
            " FOR VALUES FROM ('2026-01-02') TO ('2026-01-03')"
        )
        assert len(brin_indexes(conn)) == 4  # a later partition gets its own
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (1000,)
    command.downgrade(alembic_config(empty_db), "0003_rollup")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert brin_indexes(conn) == {}
