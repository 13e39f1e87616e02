"""The shared database fixture: a real PostgreSQL, migrated to head, fresh per test."""

from __future__ import annotations

from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select tablename from pg_tables where schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_database_is_migrated_to_head(db_url: str) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_heads()
    with psycopg.connect(db_url) as conn:
        current = {r[0] for r in conn.execute("select version_num from alembic_version")}
    assert current == set(heads)
    assert {"sites", "assets", "dispatches", "telemetry", "telemetry_latest"} <= _tables(db_url)


def test_each_test_gets_its_own_empty_database(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("create table scratch_marker (x int)")
        assert conn.execute("select count(*) from sites").fetchone() == (0,)


def test_the_marker_from_the_other_test_is_not_here(db_url: str) -> None:
    assert "scratch_marker" not in _tables(db_url)
