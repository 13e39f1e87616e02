"""The vpp-headend command: db upgrade, assets import, db prune, serve (a real process);
its log lines (key=value or JSON, uvicorn's too) and its one-line answers (issue 19)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from vpp_headend import __version__
from vpp_headend.cli import app
from vpp_headend.errors import ListenError
from vpp_headend.serve import run
from vpp_headend.settings import Settings
from vpp_protocol.logfmt import parse_kv

HEADEND = [sys.executable, "-c", "from vpp_headend.cli import main; main()"]


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
    assert res.exit_code == 2
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
    assert res.exit_code == 2
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


# -- one log format (issue 19) -----------------------------------------------------------


@pytest.fixture
def clean_env(db_url: str) -> dict[str, str]:
    """The environment without any VPP_* setting but the database URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    return {**env, "VPP_DATABASE_URL": db_url}


def _serve_log(env: dict[str, str], *args: str) -> list[str]:
    """Every stderr line of a ``vpp-headend serve`` that started, then got SIGTERM."""
    cmd = [*HEADEND, "serve", "--http-port", "0", "--grpc-port", "0", *args]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if not line or "event=listening" in line or '"event": "listening"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + rest
        return "".join([*lines, rest]).splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_logs_only_key_value_lines_uvicorns_too(clean_env: dict[str, str]) -> None:
    lines = _serve_log(clean_env)
    records = [parse_kv(line) for line in lines]  # ValueError on any other line
    for line, rec in zip(lines, records, strict=True):
        assert line.startswith("ts="), line
        assert {"ts", "level", "logger", "event"} <= rec.keys(), line
        assert rec["level"] in {"debug", "info", "warning", "error", "critical"}, line
    loggers = {rec["logger"] for rec in records}
    assert "uvicorn.error" in loggers  # the HTTP server's own lines, same format
    started = next(r for r in records if r.get("msg", "").startswith("Started server process"))
    assert started["event"] == "message"
    listening = next(r for r in records if r["event"] == "listening")
    assert listening["logger"] == "vpp_headend.serve"
    assert int(listening["http_port"]) > 0
    assert records[-1]["event"] == "stopped"


def test_serve_logs_json_lines_with_log_format_json(clean_env: dict[str, str]) -> None:
    lines = _serve_log({**clean_env, "VPP_LOG_FORMAT": "json"})
    records = [json.loads(line) for line in lines]  # one object per line, nothing else
    for rec in records:
        assert isinstance(rec, dict)
        assert {"ts", "level", "logger", "event"} <= rec.keys(), rec
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"]), rec
    listening = next(r for r in records if r["event"] == "listening")
    assert isinstance(listening["http_port"], int)  # a JSON number, not text
    assert listening["http_port"] > 0
    grpc = next(r for r in records if r["event"] == "grpc_listening")
    assert grpc["auto_enroll"] is False
    assert any(r["logger"] == "uvicorn.error" for r in records)
    # The flag does the same as the variable.
    flagged = _serve_log(clean_env, "--log-format", "json")
    assert all(json.loads(line)["event"] for line in flagged)


def test_db_upgrade_logs_json_and_keeps_alembic_chatter_at_debug(
    empty_db: str, clean_env: dict[str, str]
) -> None:
    env = {**clean_env, "VPP_DATABASE_URL": empty_db, "VPP_LOG_FORMAT": "json"}
    done = subprocess.run(
        [*HEADEND, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records[-1]["event"] == "migrated"
    assert any(r["msg"].startswith("Running upgrade") for r in records if "msg" in r)
    assert not any(r.get("msg", "").startswith("Context impl") for r in records)


# -- one-line answers (issue 19) ---------------------------------------------------------


def _answer(done: subprocess.CompletedProcess[str], *names: str) -> str:
    """The one line a failed command answered with: exit 2, no traceback, naming ``names``."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert line.startswith("vpp-headend: "), line
    for name in names:
        assert name in line, line
    return line


def _headend(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HEADEND, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process (this one) listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_version_prints_one_line() -> None:
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output == f"vpp-headend {__version__}\n"


@pytest.mark.parametrize("which", ["http", "grpc"])
def test_serve_on_a_port_in_use_answers_in_one_line(
    clean_env: dict[str, str], taken_port: int, which: str
) -> None:
    ports = {"http": "0", "grpc": "0", which: str(taken_port)}
    done = _headend(clean_env, "serve", "--http-port", ports["http"], "--grpc-port", ports["grpc"])
    what = "HTTP" if which == "http" else "gRPC"
    line = _answer(done, f"127.0.0.1:{taken_port} ({what})")
    assert line == f"vpp-headend: cannot listen on 127.0.0.1:{taken_port} ({what}): " + (
        "address already in use"
    )


@pytest.mark.parametrize("which", ["http", "grpc"])
async def test_a_port_taken_after_the_check_is_a_listen_error(
    settings: Settings, taken_port: int, which: str
) -> None:
    # The CLI checks both ports first; `run` still names a port lost to a race.
    ports = {"http_port": 0, "grpc_port": 0, f"{which}_port": taken_port}
    what = "HTTP" if which == "http" else "gRPC"
    with pytest.raises(ListenError, match=rf"127\.0\.0\.1:{taken_port} \({what}\)"):
        await run(settings.with_(**ports))


def test_db_upgrade_of_an_unreachable_database_answers_in_one_line(
    clean_env: dict[str, str],
) -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/x"
    done = _headend(clean_env, "db", "upgrade", "--database-url", url)
    line = _answer(done, "postgresql://postgres:***@127.0.0.1:1/x", "not reachable")
    assert "s3cret" not in done.stderr + done.stdout, line


def test_other_commands_name_an_unreachable_database_too(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "VPP_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    for args in (["db", "prune"], ["tokens", "list"]):
        _answer(_headend(env, *args), "postgresql://postgres@127.0.0.1:1/x", "not reachable")


def test_serve_with_a_missing_certificate_answers_in_one_line(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    tls = ["--tls-cert", "/nope/server.pem", "--tls-key", "/nope/server.key"]
    tls += ["--tls-client-ca", "/nope/ca.pem"]
    done = _headend(clean_env, "serve", "--http-port", "0", "--grpc-port", "0", *tls)
    _answer(done, "/nope/server.pem", "no such file")
    # The others are named too, once the ones before them are there.
    pki = tmp_path / "pki"
    assert CliRunner().invoke(app, ["certs", "init", "--dir", str(pki)]).exit_code == 0
    names = ["certs", "issue-server", "--dir", str(pki), "--name", "localhost"]
    assert CliRunner().invoke(app, names).exit_code == 0
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    tls += ["--tls-client-ca", str(tmp_path / "missing-ca.pem")]
    done = _headend(clean_env, "serve", "--http-port", "0", "--grpc-port", "0", *tls)
    _answer(done, str(tmp_path / "missing-ca.pem"))


def test_certs_with_a_missing_ca_or_file_answer_in_one_line(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-pki"
    _answer(_headend(clean_env, "certs", "issue-site", "s1", "--dir", str(missing)), str(missing))
    _answer(
        _headend(clean_env, "certs", "fingerprint", str(tmp_path / "x.pem")),
        str(tmp_path / "x.pem"),
    )


def test_bad_settings_answer_in_one_line(clean_env: dict[str, str]) -> None:
    _answer(_headend(clean_env, "serve", "--loop", "trio"), "event_loop")
    _answer(_headend(clean_env, "serve", "--log-format", "xml"), "log format", "'xml'")
    _answer(_headend(clean_env, "serve", "--log-level", "loud"), "log level", "'loud'")


def test_a_bug_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import vpp_headend.certs

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(vpp_headend.certs, "init_ca", broken)
    res = CliRunner().invoke(app, ["certs", "init", "--dir", str(tmp_path / "pki")])
    assert isinstance(res.exception, RuntimeError)  # not turned into a one-line answer
    assert "vpp-headend: " not in res.output
