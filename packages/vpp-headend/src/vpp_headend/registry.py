"""The asset registry: sites, assets and groups, imported from site files.

The registry is the source of truth for asset claims (DESIGN.md §6): a gateway for site
S may serve only assets registered to S. `authorize_in` returns the verdict on a
Register as a value; nothing here raises for a refused claim.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vpp_protocol.sitefile import ID_PATTERN, SiteFile

from .db import registry_repo as repo
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

    # -- queries -------------------------------------------------------------------------

    async def list_sites(
        self, *, after: repo.SiteKey | None = None, limit: int | None = None
    ) -> list[Site]:
        """Sites with their assets and groups, by site id: every one, or a page (those
        after ``after``, at most ``limit``)."""
        async with self._read.connect() as conn:
            return await repo.sites(conn, None, after=after, limit=limit)

    async def overview(self) -> list[repo.SiteOverview]:
        """Every site with its asset count, by site id (the fleet view)."""
        async with self._read.connect() as conn:
            return await repo.overview(conn)

    async def get_site(self, site_id: str) -> Site:
        """One site; `NotFoundError` when unknown."""
        async with self._read.connect() as conn:
            found = await repo.sites(conn, [site_id])
        if not found:
            raise NotFoundError(f"unknown site {site_id!r}", field="site_id")
        return found[0]

    async def list_assets(
        self,
        site_id: str | None = None,
        *,
        after: repo.AssetKey | None = None,
        limit: int | None = None,
    ) -> list[Asset]:
        """Registered assets (of one site when given), by asset id: every one, or a page
        (those after ``after``, at most ``limit``)."""
        async with self._read.connect() as conn:
            return await repo.assets(conn, site_id, after=after, limit=limit)

    async def get_asset(self, asset_id: str) -> Asset:
        """One asset; `NotFoundError` when unknown."""
        async with self._read.connect() as conn:
            found = await repo.asset(conn, asset_id)
        if found is None:
            raise NotFoundError(f"unknown asset {asset_id!r}", field="asset_id")
        return found

    async def group_sites(self, group_id: str) -> list[Site]:
        """The member sites of a group (with their assets); `NotFoundError` when unknown."""
        async with self._read.connect() as conn:
            members = await repo.group_member_sites(conn, group_id)
            if not members:
                if not await repo.group_exists(conn, group_id):
                    raise NotFoundError(f"unknown group {group_id!r}", field="group_id")
                return []
            return await repo.sites(conn, members)

    async def counts(self) -> tuple[int, int]:
        """(sites, assets) registered."""
        async with self._read.connect() as conn:
            return await repo.counts(conn)


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
        return Rejection(
            aid,
            "unauthorized",
            f"site {site_id!r} is not registered: on the headend, vpp-headend assets import "
            "<its site file>",
        )
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
    site_known = await repo.site_exists(conn, req.site_id)
    if not site_known and auto_enroll:
        await repo.enroll_site(conn, req.site_id, legacy=req.legacy)
        site_known = True
        log_event(log, "site_enrolled", site_id=req.site_id)
    # Only well-formed ids reach the query: a NUL in a text parameter fails the whole
    # statement (and the Register with it); the others are rejected as invalid below.
    registered = await repo.claimed(
        conn, [c.asset_id for c in claims if ID_PATTERN.fullmatch(c.asset_id)]
    )
    owners = {aid: r.site_id for aid, r in registered.items()}
    required = {aid: r.credential_sha256 for aid, r in registered.items() if r.credential_sha256}
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
                await repo.enroll_asset(conn, req.site_id, claim)
                log_event(
                    log,
                    "asset_enrolled",
                    site_id=req.site_id,
                    asset_id=claim.asset_id,
                    kind=claim.kind,
                )
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


async def _import(conn: AsyncConnection, site: SiteFile) -> ImportResult:
    ids = [a.asset_id for a in site.assets]
    foreign = await repo.foreign_asset(conn, site.site_id, ids)
    if foreign is not None:
        asset_id, owner = foreign
        raise ConflictError(
            f"asset {asset_id!r} is registered to site {owner!r}; "
            f"asset ids are unique across the system",
            field="asset_id",
        )
    created = not await repo.site_exists(conn, site.site_id)
    await repo.upsert_site(
        conn, site.site_id, telemetry_interval_s=site.telemetry_interval_s, legacy=site.legacy
    )
    for a in site.assets:
        await repo.upsert_asset(
            conn,
            Asset(
                asset_id=a.asset_id,
                site_id=site.site_id,
                kind=a.kind,
                capacity_kw=a.capacity_kw,
                min_kw=a.min_kw,
                max_kw=a.max_kw,
                energy_kwh=a.energy_kwh,
            ),
            credential_sha256=a.credential_sha256
            or (credential_hash(a.credential) if a.credential else None),
        )
    removed = await repo.remove_assets_except(conn, site.site_id, ids)
    await repo.replace_groups(conn, site.site_id, site.groups)
    log_event(
        log,
        "site_imported",
        site_id=site.site_id,
        created=created,
        assets=len(site.assets),
        removed=removed,
        groups=list(site.groups),
    )
    return ImportResult(
        site_id=site.site_id,
        created=created,
        assets_upserted=len(site.assets),
        assets_removed=removed,
        groups=tuple(site.groups),
    )


__all__ = ["ImportResult", "Registry", "authorize_in", "credential_hash"]
