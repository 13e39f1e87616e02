"""SQL of the asset registry: sites, assets and group memberships, what a site file import
writes, and the lookups and enrolments of a Register's claims."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, TypeAlias

from sqlalchemy import ARRAY, Text, any_, bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import Asset, AssetClaim, Site
from . import models as m

_DROP_EMPTY_GROUPS = text(
    "DELETE FROM groups g WHERE NOT EXISTS "
    "(SELECT 1 FROM group_members gm WHERE gm.group_id = g.group_id)"
)


class Claimed(NamedTuple):
    """A registered asset as a claim meets it: its site and its credential's hash."""

    site_id: str
    credential_sha256: str | None


def _asset(row: Any) -> Asset:
    r = row._mapping
    return Asset(
        asset_id=r["asset_id"],
        site_id=r["site_id"],
        kind=r["kind"],
        capacity_kw=r["capacity_kw"],
        min_kw=r["min_kw"],
        max_kw=r["max_kw"],
        energy_kwh=r["energy_kwh"],
    )


# -- claims --------------------------------------------------------------------------------


async def site_exists(conn: AsyncConnection, site_id: str) -> bool:
    """True when the site is registered."""
    row = await conn.execute(select(m.sites.c.site_id).where(m.sites.c.site_id == site_id))
    return row.first() is not None


async def enroll_site(conn: AsyncConnection, site_id: str, *, legacy: bool) -> None:
    """Register a site unless it is (dev auto-enrolment)."""
    await conn.execute(
        insert(m.sites).values(site_id=site_id, legacy=legacy).on_conflict_do_nothing()
    )


async def claimed(conn: AsyncConnection, asset_ids: Sequence[str]) -> dict[str, Claimed]:
    """The registered ones of ``asset_ids`` (well-formed ids only: a NUL in a text
    parameter fails the whole statement)."""
    a = m.assets
    rows = await conn.execute(
        select(a.c.asset_id, a.c.site_id, a.c.credential_sha256).where(
            a.c.asset_id == any_(bindparam("ids", list(asset_ids), type_=ARRAY(Text)))
        )
    )
    return {r.asset_id: Claimed(r.site_id, r.credential_sha256) for r in rows}


async def enroll_asset(conn: AsyncConnection, site_id: str, claim: AssetClaim) -> None:
    """Register a claimed asset to ``site_id`` unless it is (dev auto-enrolment)."""
    await conn.execute(
        insert(m.assets)
        .values(
            asset_id=claim.asset_id,
            site_id=site_id,
            kind=claim.kind,
            capacity_kw=claim.capacity_kw,
            min_kw=claim.min_kw,
            max_kw=claim.max_kw,
            energy_kwh=claim.energy_kwh,
        )
        .on_conflict_do_nothing()
    )


# -- import --------------------------------------------------------------------------------


async def foreign_asset(
    conn: AsyncConnection, site_id: str, asset_ids: Sequence[str]
) -> tuple[str, str] | None:
    """(asset id, its site) of one of ``asset_ids`` registered to another site, or None."""
    a = m.assets
    row = (
        await conn.execute(
            select(a.c.asset_id, a.c.site_id).where(
                a.c.asset_id.in_(asset_ids), a.c.site_id != site_id
            )
        )
    ).first()
    return None if row is None else (row.asset_id, row.site_id)


async def upsert_site(
    conn: AsyncConnection, site_id: str, *, telemetry_interval_s: float | None, legacy: bool
) -> None:
    """Create the site, or update its settings."""
    stmt = insert(m.sites).values(
        site_id=site_id, telemetry_interval_s=telemetry_interval_s, legacy=legacy
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[m.sites.c.site_id],
            set_={
                "telemetry_interval_s": stmt.excluded.telemetry_interval_s,
                "legacy": stmt.excluded.legacy,
                "updated_at": func.now(),
            },
        )
    )


async def upsert_asset(
    conn: AsyncConnection, asset: Asset, *, credential_sha256: str | None
) -> None:
    """Create the asset, or update it (its site stays: the caller checked it)."""
    ins = insert(m.assets).values(
        asset_id=asset.asset_id,
        site_id=asset.site_id,
        kind=asset.kind,
        capacity_kw=asset.capacity_kw,
        min_kw=asset.min_kw,
        max_kw=asset.max_kw,
        energy_kwh=asset.energy_kwh,
        credential_sha256=credential_sha256,
    )
    await conn.execute(
        ins.on_conflict_do_update(
            index_elements=[m.assets.c.asset_id],
            set_={
                "kind": ins.excluded.kind,
                "capacity_kw": ins.excluded.capacity_kw,
                "min_kw": ins.excluded.min_kw,
                "max_kw": ins.excluded.max_kw,
                "energy_kwh": ins.excluded.energy_kwh,
                "credential_sha256": ins.excluded.credential_sha256,
                "updated_at": func.now(),
            },
        )
    )


async def remove_assets_except(conn: AsyncConnection, site_id: str, keep: Sequence[str]) -> int:
    """Delete the site's assets not in ``keep``; how many."""
    removed = await conn.execute(
        delete(m.assets).where(m.assets.c.site_id == site_id, m.assets.c.asset_id.not_in(keep))
    )
    return removed.rowcount


async def replace_groups(conn: AsyncConnection, site_id: str, groups: Sequence[str]) -> None:
    """Make ``groups`` the site's groups; a group left without members is deleted."""
    gm = m.group_members
    for group_id in groups:
        await conn.execute(insert(m.groups).values(group_id=group_id).on_conflict_do_nothing())
        await conn.execute(
            insert(gm).values(group_id=group_id, site_id=site_id).on_conflict_do_nothing()
        )
    await conn.execute(
        delete(gm).where(gm.c.site_id == site_id, gm.c.group_id.not_in(list(groups) or [""]))
    )
    await conn.execute(_DROP_EMPTY_GROUPS)


# -- queries -------------------------------------------------------------------------------


#: Sort key of GET /sites (and /gateways): the site id.
SiteKey: TypeAlias = tuple[str]
#: Sort key of GET /assets: the asset id.
AssetKey: TypeAlias = tuple[str]


def site_key(site: Site) -> SiteKey:
    return (site.site_id,)


def asset_key(asset: Asset) -> AssetKey:
    return (asset.asset_id,)


class SiteOverview(NamedTuple):
    """A site as the fleet view lists it: no asset rows, just how many it has."""

    site_id: str
    telemetry_interval_s: float | None
    assets: int


_OVERVIEW = text(
    "SELECT s.site_id, s.telemetry_interval_s, count(a.asset_id)"
    " FROM sites s LEFT JOIN assets a USING (site_id)"
    " GROUP BY s.site_id ORDER BY s.site_id"
)


async def overview(conn: AsyncConnection) -> list[SiteOverview]:
    """Every site with its asset count, by site id (one statement; the fleet page at
    1,000 sites reads 1,000 rows instead of building 10,000 assets)."""
    return [SiteOverview(r[0], r[1], int(r[2])) for r in await conn.execute(_OVERVIEW)]


async def sites(
    conn: AsyncConnection,
    site_ids: Sequence[str] | None,
    *,
    after: SiteKey | None = None,
    limit: int | None = None,
) -> list[Site]:
    """The sites (all when ``site_ids`` is None) with their assets and groups, by site id;
    those after ``after``, at most ``limit`` (a page: its assets and groups only)."""
    sq = select(m.sites).order_by(m.sites.c.site_id).limit(limit)
    if site_ids is not None:
        sq = sq.where(m.sites.c.site_id.in_(site_ids))
    if after is not None:
        sq = sq.where(m.sites.c.site_id > after[0])
    site_rows = (await conn.execute(sq)).all()
    aq = select(m.assets).order_by(m.assets.c.asset_id)
    gq = select(m.group_members).order_by(m.group_members.c.group_id)
    if site_ids is not None or after is not None or limit is not None:
        ids = bindparam("ids", [r.site_id for r in site_rows], type_=ARRAY(Text))
        aq = aq.where(m.assets.c.site_id == any_(ids))
        gq = gq.where(m.group_members.c.site_id == any_(ids))
    assets_by_site: dict[str, list[Asset]] = {}
    for row in await conn.execute(aq):
        asset = _asset(row)
        assets_by_site.setdefault(asset.site_id, []).append(asset)
    groups_by_site: dict[str, list[str]] = {}
    for row in await conn.execute(gq):
        groups_by_site.setdefault(row.site_id, []).append(row.group_id)
    return [
        Site(
            site_id=row.site_id,
            assets=tuple(assets_by_site.get(row.site_id, ())),
            groups=tuple(groups_by_site.get(row.site_id, ())),
            telemetry_interval_s=row.telemetry_interval_s,
            legacy=row.legacy,
        )
        for row in site_rows
    ]


async def assets(
    conn: AsyncConnection,
    site_id: str | None,
    *,
    after: AssetKey | None = None,
    limit: int | None = None,
) -> list[Asset]:
    """Registered assets (of one site when given), by asset id; those after ``after``, at
    most ``limit``."""
    query = select(m.assets).order_by(m.assets.c.asset_id).limit(limit)
    if site_id is not None:
        query = query.where(m.assets.c.site_id == site_id)
    if after is not None:
        query = query.where(m.assets.c.asset_id > after[0])
    return [_asset(r) for r in await conn.execute(query)]


async def asset(conn: AsyncConnection, asset_id: str) -> Asset | None:
    """One asset, or None when unknown."""
    row = (await conn.execute(select(m.assets).where(m.assets.c.asset_id == asset_id))).first()
    return None if row is None else _asset(row)


async def group_member_sites(conn: AsyncConnection, group_id: str) -> list[str]:
    """The member sites of a group, by site id (none for an unknown group)."""
    gm = m.group_members
    query = select(gm.c.site_id).where(gm.c.group_id == group_id).order_by(gm.c.site_id)
    return [r.site_id for r in await conn.execute(query)]


async def group_exists(conn: AsyncConnection, group_id: str) -> bool:
    """True when the group exists."""
    known = await conn.execute(select(func.count()).where(m.groups.c.group_id == group_id))
    return bool(known.scalar())


async def counts(conn: AsyncConnection) -> tuple[int, int]:
    """(sites, assets) registered."""
    n_sites = (await conn.execute(select(func.count()).select_from(m.sites))).scalar()
    n_assets = (await conn.execute(select(func.count()).select_from(m.assets))).scalar()
    return int(n_sites or 0), int(n_assets or 0)


__all__ = [
    "AssetKey",
    "Claimed",
    "SiteKey",
    "SiteOverview",
    "asset",
    "asset_key",
    "assets",
    "claimed",
    "counts",
    "enroll_asset",
    "enroll_site",
    "foreign_asset",
    "group_exists",
    "group_member_sites",
    "overview",
    "remove_assets_except",
    "replace_groups",
    "site_exists",
    "site_key",
    "sites",
    "upsert_asset",
    "upsert_site",
]
