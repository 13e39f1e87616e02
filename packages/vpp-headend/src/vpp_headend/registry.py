"""The asset registry: sites, assets and groups, imported from site files.

The registry is the source of truth for asset claims (DESIGN.md §6): a gateway for site
S may serve only assets registered to S. `Registry.authorize` returns the verdict on a
Register as a value; nothing here raises for a refused claim.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ARRAY, Text, any_, bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vpp_protocol.sitefile import ID_PATTERN, SiteFile

from .db import models as m
from .db.engine import reader
from .domain import Asset, AssetClaim, ClaimOutcome, RegisterRequest, Rejection, Site
from .errors import ConflictError, NotFoundError
from .logs import log_event

log = logging.getLogger(__name__)

_ID_RULE = "[A-Za-z0-9._-]{1,64}"


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one site file import changed."""

    site_id: str
    created: bool
    assets_upserted: int
    assets_removed: int
    groups: tuple[str, ...]


def _asset(row: object) -> Asset:
    r = row._mapping  # type: ignore[attr-defined]
    return Asset(
        asset_id=r["asset_id"],
        site_id=r["site_id"],
        kind=r["kind"],
        capacity_kw=r["capacity_kw"],
        min_kw=r["min_kw"],
        max_kw=r["max_kw"],
        energy_kwh=r["energy_kwh"],
    )


class Registry:
    """Registry queries and imports over one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._read = reader(engine)  # autocommit: reads cost no BEGIN/ROLLBACK

    # -- import ------------------------------------------------------------------------

    async def import_site(self, site: SiteFile) -> ImportResult:
        """Create or update a site, its assets and its group memberships (idempotent).

        The file is the site's truth: assets and groups it no longer lists are removed
        from the site. An asset registered to another site is a conflict (asset ids are
        unique across the system).
        """
        async with self._engine.begin() as conn:
            return await _import(conn, site)

    # -- claims --------------------------------------------------------------------------

    # -- queries -------------------------------------------------------------------------

    async def list_sites(self) -> list[Site]:
        """Every site with its assets and groups, by site id."""
        async with self._read.connect() as conn:
            return await _sites(conn, None)

    async def get_site(self, site_id: str) -> Site:
        """One site; `NotFoundError` when unknown."""
        async with self._read.connect() as conn:
            found = await _sites(conn, [site_id])
        if not found:
            raise NotFoundError(f"unknown site {site_id!r}", field="site_id")
        return found[0]

    async def list_assets(self, site_id: str | None = None) -> list[Asset]:
        """Registered assets (of one site when given), by asset id."""
        query = select(m.assets).order_by(m.assets.c.asset_id)
        if site_id is not None:
            query = query.where(m.assets.c.site_id == site_id)
        async with self._read.connect() as conn:
            return [_asset(r) for r in await conn.execute(query)]

    async def get_asset(self, asset_id: str) -> Asset:
        """One asset; `NotFoundError` when unknown."""
        async with self._read.connect() as conn:
            row = (
                await conn.execute(select(m.assets).where(m.assets.c.asset_id == asset_id))
            ).first()
        if row is None:
            raise NotFoundError(f"unknown asset {asset_id!r}", field="asset_id")
        return _asset(row)

    async def group_sites(self, group_id: str) -> list[Site]:
        """The member sites of a group (with their assets); `NotFoundError` when unknown."""
        async with self._read.connect() as conn:
            members = [
                r.site_id
                for r in await conn.execute(
                    select(m.group_members.c.site_id)
                    .where(m.group_members.c.group_id == group_id)
                    .order_by(m.group_members.c.site_id)
                )
            ]
            if not members:
                known = await conn.execute(
                    select(func.count()).where(m.groups.c.group_id == group_id)
                )
                if not known.scalar():
                    raise NotFoundError(f"unknown group {group_id!r}", field="group_id")
                return []
            return await _sites(conn, members)

    async def counts(self) -> tuple[int, int]:
        """(sites, assets) registered."""
        async with self._read.connect() as conn:
            n_sites = (await conn.execute(select(func.count()).select_from(m.sites))).scalar()
            n_assets = (await conn.execute(select(func.count()).select_from(m.assets))).scalar()
        return int(n_sites or 0), int(n_assets or 0)


def _verdict(
    claim: AssetClaim,
    site_id: str,
    site_known: bool,
    owners: dict[str, str],
    seen: set[str],
    auto_enroll: bool,
) -> Rejection | None:
    """Why a claim is refused, or None when it is accepted."""
    aid = claim.asset_id
    if not site_known:
        return Rejection(aid, "unauthorized", f"site {site_id!r} is not registered")
    if not ID_PATTERN.fullmatch(aid):
        what = "contains control characters" if not aid.isprintable() else "is malformed"
        return Rejection(aid[:64], "invalid", f"asset_id {what}: it must match {_ID_RULE}")
    if not claim.credential.isprintable():  # NUL, control and format characters
        return Rejection(aid, "invalid", "credential contains control characters")
    if aid in seen:
        return Rejection(aid, "duplicate", "asset_id claimed twice in one Register")
    problem = claim.problem()
    if problem is not None:
        return Rejection(aid, "invalid", problem)
    owner = owners.get(aid)
    if owner is None and not auto_enroll:
        return Rejection(aid, "unknown_asset", "asset is not in the headend's registry")
    if owner is not None and owner != site_id:
        # The owner's name is not disclosed to another site.
        return Rejection(aid, "foreign_asset", "asset is registered to another site")
    return None


def credential_hash(credential: str) -> str:
    """What the registry stores for a per-asset credential (SHA-256, hex)."""
    return hashlib.sha256(credential.encode()).hexdigest()


def _credential_verdict(claim: AssetClaim, required_sha256: str) -> Rejection | None:
    """UNAUTHORIZED unless the claim presents the credential whose hash the registry holds."""
    if not claim.credential:
        return Rejection(
            claim.asset_id, "unauthorized", "asset requires a credential; none was presented"
        )
    if not hmac.compare_digest(credential_hash(claim.credential), required_sha256):
        return Rejection(claim.asset_id, "unauthorized", "asset credential does not match")
    return None


async def authorize_in(
    conn: AsyncConnection, req: RegisterRequest, *, auto_enroll: bool
) -> ClaimOutcome:
    """Check each claimed asset against the registry (enrolling unknown ones if asked),
    inside the caller's transaction (a Register is admitted in one)."""
    claims = req.claims or (
        (AssetClaim(asset_id=req.legacy_asset_id),) if req.legacy_asset_id else ()
    )
    site_known = await _site_exists(conn, req.site_id)
    if not site_known and auto_enroll:
        await conn.execute(
            insert(m.sites).values(site_id=req.site_id, legacy=req.legacy).on_conflict_do_nothing()
        )
        site_known = True
        log_event(log, "site_enrolled", site_id=req.site_id)
    # Only well-formed ids reach the query: a NUL in a text parameter fails the whole
    # statement (and the Register with it); the others are rejected as invalid below.
    ids = [c.asset_id for c in claims if ID_PATTERN.fullmatch(c.asset_id)]
    owners: dict[str, str] = {}
    required: dict[str, str] = {}
    for row in await conn.execute(
        select(m.assets.c.asset_id, m.assets.c.site_id, m.assets.c.credential_sha256).where(
            m.assets.c.asset_id == any_(bindparam("ids", ids, type_=ARRAY(Text)))
        )
    ):
        owners[row.asset_id] = row.site_id
        if row.credential_sha256:
            required[row.asset_id] = row.credential_sha256
    accepted: list[str] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for claim in claims:
        verdict = _verdict(claim, req.site_id, site_known, owners, seen, auto_enroll)
        if verdict is None and claim.asset_id in required:
            verdict = _credential_verdict(claim, required[claim.asset_id])
        seen.add(claim.asset_id)
        if verdict is None:
            if claim.asset_id not in owners:
                await _enroll(conn, req.site_id, claim)
            accepted.append(claim.asset_id)
        else:
            rejected.append(verdict)
    default = req.legacy_asset_id if req.legacy and accepted else ""
    return ClaimOutcome(
        site_known=site_known,
        accepted=tuple(accepted),
        rejected=tuple(rejected),
        default_asset_id=default,
    )


async def _site_exists(conn: AsyncConnection, site_id: str) -> bool:
    row = await conn.execute(select(m.sites.c.site_id).where(m.sites.c.site_id == site_id))
    return row.first() is not None


async def _enroll(conn: AsyncConnection, site_id: str, claim: AssetClaim) -> None:
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
    log_event(log, "asset_enrolled", site_id=site_id, asset_id=claim.asset_id, kind=claim.kind)


async def _import(conn: AsyncConnection, site: SiteFile) -> ImportResult:
    ids = [a.asset_id for a in site.assets]
    foreign = (
        await conn.execute(
            select(m.assets.c.asset_id, m.assets.c.site_id).where(
                m.assets.c.asset_id.in_(ids), m.assets.c.site_id != site.site_id
            )
        )
    ).first()
    if foreign is not None:
        raise ConflictError(
            f"asset {foreign.asset_id!r} is registered to site {foreign.site_id!r}; "
            f"asset ids are unique across the system",
            field="asset_id",
        )
    created = not await _site_exists(conn, site.site_id)
    stmt = insert(m.sites).values(
        site_id=site.site_id, telemetry_interval_s=site.telemetry_interval_s, legacy=site.legacy
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
    for a in site.assets:
        ins = insert(m.assets).values(
            asset_id=a.asset_id,
            site_id=site.site_id,
            kind=a.kind,
            capacity_kw=a.capacity_kw,
            min_kw=a.min_kw,
            max_kw=a.max_kw,
            energy_kwh=a.energy_kwh,
            credential_sha256=a.credential_sha256
            or (credential_hash(a.credential) if a.credential else None),
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
    removed = await conn.execute(
        delete(m.assets).where(m.assets.c.site_id == site.site_id, m.assets.c.asset_id.not_in(ids))
    )
    for g in site.groups:
        await conn.execute(insert(m.groups).values(group_id=g).on_conflict_do_nothing())
        await conn.execute(
            insert(m.group_members)
            .values(group_id=g, site_id=site.site_id)
            .on_conflict_do_nothing()
        )
    await conn.execute(
        delete(m.group_members).where(
            m.group_members.c.site_id == site.site_id,
            m.group_members.c.group_id.not_in(list(site.groups) or [""]),
        )
    )
    # A group nobody belongs to any more is gone too.
    await conn.execute(
        text(
            "DELETE FROM groups g WHERE NOT EXISTS "
            "(SELECT 1 FROM group_members gm WHERE gm.group_id = g.group_id)"
        )
    )
    log_event(
        log,
        "site_imported",
        site_id=site.site_id,
        created=created,
        assets=len(site.assets),
        removed=removed.rowcount,
        groups=list(site.groups),
    )
    return ImportResult(
        site_id=site.site_id,
        created=created,
        assets_upserted=len(site.assets),
        assets_removed=removed.rowcount,
        groups=tuple(site.groups),
    )


async def _sites(conn: AsyncConnection, site_ids: Sequence[str] | None) -> list[Site]:
    sq = select(m.sites).order_by(m.sites.c.site_id)
    aq = select(m.assets).order_by(m.assets.c.asset_id)
    gq = select(m.group_members).order_by(m.group_members.c.group_id)
    if site_ids is not None:
        sq = sq.where(m.sites.c.site_id.in_(site_ids))
        aq = aq.where(m.assets.c.site_id.in_(site_ids))
        gq = gq.where(m.group_members.c.site_id.in_(site_ids))
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
        for row in await conn.execute(sq)
    ]


__all__ = ["ImportResult", "Registry", "authorize_in", "credential_hash"]
