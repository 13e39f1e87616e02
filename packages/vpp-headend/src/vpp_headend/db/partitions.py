"""Daily partitions of the telemetry history: create ahead, and drop past retention.

Partitions are named ``telemetry_pYYYYMMDD`` and cover one UTC day. Readings outside
every partition land in ``telemetry_default``; when a day's partition is created after
such rows arrived, they are moved into it first (PostgreSQL refuses to create a
partition whose range the default partition already holds).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_NAME = re.compile(r"^telemetry_p(\d{8})$")


def partition_name(day: date) -> str:
    """The partition table name of a UTC day."""
    return f"telemetry_p{day:%Y%m%d}"


def _bounds(day: date) -> tuple[datetime, datetime]:
    lo = datetime.combine(day, time(0), tzinfo=UTC)
    return lo, lo + timedelta(days=1)


async def existing_partitions(conn: AsyncConnection) -> dict[date, str]:
    """Daily partitions attached to ``telemetry``, by day."""
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'telemetry'::regclass"
        )
    )
    out: dict[date, str] = {}
    for (name,) in rows:
        m = _NAME.match(name)
        if m:
            out[datetime.strptime(m.group(1), "%Y%m%d").date()] = name
    return out


async def ensure_partitions(engine: AsyncEngine, today: date, days_ahead: int) -> list[str]:
    """Create the partitions of ``today - 1`` .. ``today + days_ahead``; return new names."""
    created: list[str] = []
    async with engine.connect() as conn:
        have = await existing_partitions(conn)
    for offset in range(-1, days_ahead + 1):
        day = today + timedelta(days=offset)
        if day in have:
            continue
        async with engine.begin() as conn:
            await _create(conn, day)
        created.append(partition_name(day))
    return created


async def _create(conn: AsyncConnection, day: date) -> None:
    name = partition_name(day)
    lo, hi = _bounds(day)
    # Serialise against another replica doing the same at the same moment.
    await conn.execute(text("LOCK TABLE telemetry IN SHARE UPDATE EXCLUSIVE MODE"))
    exists = await conn.execute(text("SELECT to_regclass(:n)"), {"n": name})
    if exists.scalar() is not None:
        return
    stray = await conn.execute(
        text("SELECT 1 FROM telemetry_default WHERE ts >= :lo AND ts < :hi LIMIT 1"),
        {"lo": lo, "hi": hi},
    )
    if stray.first() is None:
        await conn.execute(
            text(
                f'CREATE TABLE "{name}" PARTITION OF telemetry '
                f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
            )
        )
        return
    # Rows of that day already sit in the default partition: move them, then attach.
    await conn.execute(
        text(f'CREATE TABLE "{name}" (LIKE telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    )
    await conn.execute(
        text(
            f"WITH moved AS (DELETE FROM telemetry_default WHERE ts >= :lo AND ts < :hi "
            f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved'
        ),
        {"lo": lo, "hi": hi},
    )
    await conn.execute(
        text(
            f'ALTER TABLE telemetry ATTACH PARTITION "{name}" '
            f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
        )
    )


async def drop_partitions_before(engine: AsyncEngine, cutoff: date) -> list[str]:
    """Drop whole daily partitions whose day ends on or before ``cutoff``; return names."""
    dropped: list[str] = []
    async with engine.connect() as conn:
        have = await existing_partitions(conn)
    for day, name in sorted(have.items()):
        if day + timedelta(days=1) <= cutoff:
            async with engine.begin() as conn:
                await conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
            dropped.append(name)
    return dropped


__all__ = ["drop_partitions_before", "ensure_partitions", "existing_partitions", "partition_name"]
