"""`Headend.open`, the composition root: a refused start leaves nothing running, and an
app given no headend opens one for its lifespan."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from vpp_headend import Headend, Settings, create_app
from vpp_headend.errors import UnavailableError


async def _accepts(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def _other_connections(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_start_refused_late_stops_what_it_had_started(
    settings: Settings, tmp_path: Path
) -> None:
    # Unreadable TLS files fail the last step before the gRPC server listens: the engine,
    # ingest, sessions, dispatch, LISTEN and the periodic jobs are running by then.
    for name in ("server.pem", "server.key", "ca.pem"):
        (tmp_path / name).write_text("not a PEM file\n")
    tls = settings.with_(
        tls_cert=tmp_path / "server.pem",
        tls_key=tmp_path / "server.key",
        tls_client_ca=tmp_path / "ca.pem",
    )
    tasks, thresholds = asyncio.all_tasks(), gc.get_threshold()
    with pytest.raises(UnavailableError, match="cannot load the TLS files"):
        async with Headend.open(tls):
            pytest.fail("a headend opened with unreadable TLS files")
    assert asyncio.all_tasks() == tasks  # no writer, listener, job or sweeper left behind
    assert gc.get_threshold() == thresholds
    assert settings.database_url is not None
    assert _other_connections(settings.database_url) == 0


async def test_an_unmigrated_database_is_refused_naming_the_command(
    settings: Settings, empty_db: str
) -> None:
    with pytest.raises(UnavailableError, match="run `vpp-headend db upgrade`"):
        async with Headend.open(settings.with_(database_url=empty_db)):
            pytest.fail("a headend opened on an unmigrated database")
    assert _other_connections(empty_db) == 0


async def test_an_app_given_no_headend_opens_one_for_its_lifespan(settings: Settings) -> None:
    async with AsyncTestClient(create_app(settings)) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 200, ready.text
        port = ready.json()["grpc_port"]
        assert await _accepts(port)
        assert (await http.get("/sites")).json() == {"items": [], "next": None}
    assert not await _accepts(port)  # its lifespan closed the gRPC server
    assert settings.database_url is not None
    assert _other_connections(settings.database_url) == 0
