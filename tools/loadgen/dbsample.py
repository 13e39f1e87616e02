"""What the harness reads from the load database: telemetry lag of the probe assets, the
slow statements, the backends' pids and the headend's own dispatch timings."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import psycopg

from .waits import until


async def lag_monitor(url: str, probes: list[str], since: float, stop: asyncio.Event, poll: float,
                      out: list[float]) -> None:  # fmt: skip
    """Generation ``ts`` -> row visible, once per new (asset, seq) of the ``probes``
    stored after ``since`` (unix s), polled every ``poll`` s until ``stop``."""
    seen: set[tuple[str, int]] = set()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            cur = await conn.execute(
                "SELECT asset_id, seq, extract(epoch FROM ts) FROM telemetry "
                "WHERE asset_id = ANY(%s) AND ts > to_timestamp(%s)",
                (probes, since),
            )
            rows = await cur.fetchall()
            now = time.time()
            for aid, seq, ts in rows:
                key = (aid, int(seq))
                if key not in seen:
                    seen.add(key)
                    out.append(now - float(ts))
            await until(stop, poll)


async def db_watch(
    url: str, stop: asyncio.Event, out: list[tuple[float, str, str, float, str]]
) -> None:
    """Statements of the load database running 100 ms or more, sampled every 0.1 s:
    (unix time, wait type, wait event, seconds running, query head) — what a slow
    request waited on inside PostgreSQL (a lock, I/O, the WAL)."""
    name = urlsplit(url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            cur = await conn.execute(
                "SELECT extract(epoch FROM now()), coalesce(wait_event_type, 'CPU'),"
                " coalesce(wait_event, ''), extract(epoch FROM now() - query_start),"
                " left(regexp_replace(query, '\\s+', ' ', 'g'), 80)"
                " FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                " AND pid <> pg_backend_pid() AND now() - query_start > interval '100 ms'",
                (name,),
            )
            out.extend((float(a), b, c, float(d), e) for a, b, c, d, e in await cur.fetchall())
            await until(stop, 0.1)


async def backend_pids(url: str) -> list[int]:
    """The PostgreSQL backends connected to the load database (the headends' pools)."""
    name = urlsplit(url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        return [int(r[0]) for r in await cur.fetchall()]


async def server_applied_ms(url: str) -> list[float]:
    """issued_at -> the dispatch-level `applied` event of every applied dispatch, in ms."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT extract(epoch FROM min(e.at) - d.issued_at) * 1000 FROM dispatches d"
            " JOIN dispatch_events e ON e.dispatch_id = d.dispatch_id"
            " WHERE e.state = 'applied' AND e.scope = 'dispatch' GROUP BY d.dispatch_id"
        )
        return [float(r[0]) for r in await cur.fetchall()]
