"""SQL for the security tables: REST API tokens and the certificate deny-list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, exists, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from . import models as m


@dataclass(frozen=True, slots=True)
class TokenRow:
    """One API token (its hash never leaves the database layer)."""

    token_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


async def insert_token(
    engine: AsyncEngine, token_id: str, name: str, role: str, token_sha256: str
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(m.api_tokens).values(
                token_id=token_id, name=name, role=role, token_sha256=token_sha256
            )
        )


def _role_query() -> Any:
    t = m.api_tokens
    active = t.c.revoked_at.is_(None)
    return select(
        select(t.c.role)
        .where(t.c.token_sha256 == bindparam("token_sha256", type_=Text), active)
        .scalar_subquery(),
        exists().where(active),
    )


#: Built once: it runs for every REST request (a statement built per call is garbage
#: for the cycle collector).
_ROLE = _role_query()


async def role_of(engine: AsyncEngine, token_sha256: str) -> tuple[str | None, bool]:
    """(role of the active token with this hash or None, whether any active token exists)."""
    async with engine.connect() as conn:
        role, any_active = (await conn.execute(_ROLE, {"token_sha256": token_sha256})).one()
    return role, bool(any_active)


async def list_tokens(engine: AsyncEngine) -> list[TokenRow]:
    t = m.api_tokens
    query = select(t.c.token_id, t.c.name, t.c.role, t.c.created_at, t.c.revoked_at).order_by(
        t.c.created_at
    )
    async with engine.connect() as conn:
        return [TokenRow(*row) for row in await conn.execute(query)]


async def revoke_token(engine: AsyncEngine, token_id: str, now: datetime) -> bool:
    t = m.api_tokens
    async with engine.begin() as conn:
        result = await conn.execute(
            update(t)
            .where(t.c.token_id == token_id, t.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    return bool(result.rowcount)


async def revoke_certificate(engine: AsyncEngine, fingerprint_sha256: str, reason: str) -> bool:
    """Add a fingerprint to the deny-list; False when it was there already."""
    r = m.revoked_certificates
    stmt = (
        insert(r)
        .values(fingerprint_sha256=fingerprint_sha256, reason=reason)
        .on_conflict_do_nothing()
        .returning(r.c.fingerprint_sha256)
    )
    async with engine.begin() as conn:
        inserted = (await conn.execute(stmt)).first()
    return inserted is not None


async def certificate_revoked(engine: AsyncEngine, fingerprint_sha256: str) -> bool:
    r = m.revoked_certificates
    query = select(exists().where(r.c.fingerprint_sha256 == fingerprint_sha256))
    async with engine.connect() as conn:
        return bool((await conn.execute(query)).scalar())


__all__ = [
    "TokenRow",
    "certificate_revoked",
    "insert_token",
    "list_tokens",
    "revoke_certificate",
    "revoke_token",
    "role_of",
]
