"""Statement shapes the dispatch repositories share: rows in as one array per column,
child rows out as one array per column, several writes as one statement (one round trip
for any number of rows)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, func, select, true
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import ARRAY


def unnest_insert(table: Any, prefix: str, cols: Sequence[str]) -> Any:
    """``INSERT INTO table (cols) SELECT … FROM unnest(:<prefix><col>, …)``, in the
    arrays' order: one array parameter per column, any number of rows (zero included)."""
    params = [bindparam(f"{prefix}{c}", type_=ARRAY(table.c[c].type)) for c in cols]
    src = func.unnest(*params).table_valued(*cols, with_ordinality="ord").render_derived()
    return pg_insert(table).from_select(
        list(cols), select(*(src.c[c] for c in cols)).order_by(src.c.ord)
    )


def unnest_params(
    prefix: str, rows: Sequence[Mapping[str, Any]], cols: Sequence[str]
) -> dict[str, list[Any]]:
    """The array parameters of `unnest_insert` for ``rows``."""
    return {f"{prefix}{c}": [r[c] for r in rows] for c in cols}


def arrays(outer: Any, table: Any, prefix: str, cols: Sequence[str], order: Sequence[Any]) -> Any:
    """A LATERAL subquery: each column of ``table``'s rows for the ``outer`` dispatch as
    one array (in ``order``); NULL when there are none."""
    return (
        select(
            *(
                func.array_agg(aggregate_order_by(table.c[c], *order)).label(f"{prefix}{c}")
                for c in cols
            )
        )
        .where(table.c.dispatch_id == outer.c.dispatch_id)
        .lateral(f"{prefix}agg")
    )


def columns(r: Any, prefix: str, cols: Sequence[str]) -> Any:
    """The rows of one LATERAL's arrays, as tuples (none when the arrays are NULL)."""
    values = [r[f"{prefix}{c}"] for c in cols]
    return zip(*values, strict=True) if values[0] is not None else ()


class Writes:
    """Writes decided in Python, sent together as one statement (data-modifying CTEs) —
    one round trip however many. Each is a prebuilt statement and its parameters (names
    unique per statement); they must not touch the same row twice: they all see the
    statement's one snapshot."""

    def __init__(self) -> None:
        self._stmts: list[Any] = []
        self._params: dict[str, Any] = {}

    def add(self, write: tuple[Any, dict[str, Any]]) -> None:
        stmt, params = write
        if stmt in self._stmts:
            raise ValueError("one Writes takes each statement once")
        self._stmts.append(stmt)
        self._params |= params

    def __bool__(self) -> bool:
        return bool(self._stmts)

    async def run(self, conn: AsyncConnection) -> None:
        stmts, params = tuple(self._stmts), self._params
        self._stmts, self._params = [], {}
        if len(stmts) == 1:
            await conn.execute(stmts[0], params)
        elif stmts:
            await conn.execute(_together(stmts), params)


@functools.cache
def _together(stmts: tuple[Any, ...]) -> Any:
    return select(true()).add_cte(*(x.cte(f"w{i}") for i, x in enumerate(stmts)))


__all__ = ["Writes", "arrays", "columns", "unnest_insert", "unnest_params"]
