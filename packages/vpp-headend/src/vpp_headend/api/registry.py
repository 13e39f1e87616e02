"""GET /sites, /sites/{site_id}, /assets, /assets/{asset_id}."""

from __future__ import annotations

from litestar import Controller, get

from ..db.registry_repo import AssetKey, SiteKey, asset_key, site_key
from .deps import RegistryDep
from .paging import DEFAULT_LIMIT, CursorQuery, LimitQuery, pager
from .params import AssetIdPath, SiteIdPath, SiteIdQuery
from .problems import problem_responses
from .schemas import AssetOut, AssetPage, SiteOut, SitePage, asset_out, site_out


class RegistryController(Controller):
    """The asset registry, read-only (import with `vpp-headend assets import`)."""

    tags = ["registry"]  # noqa: RUF012

    @get("/sites", responses=problem_responses(400, 401, 422))
    async def list_sites(
        self,
        registry: RegistryDep,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> SitePage:
        """Registered sites by site id, a page at a time (``next``: the following page)."""
        page = pager("sites", SiteKey, limit=limit, cursor=cursor)
        rows, next_cursor = page.page(
            await registry.list_sites(after=page.after, limit=page.fetch), site_key
        )
        return SitePage(items=[site_out(s) for s in rows], next=next_cursor)

    @get("/sites/{site_id:str}", responses=problem_responses(400, 401, 404))
    async def get_site(self, registry: RegistryDep, site_id: SiteIdPath) -> SiteOut:
        """One site with its assets."""
        return site_out(await registry.get_site(site_id), detail=True)

    @get("/assets", responses=problem_responses(400, 401, 422))
    async def list_assets(
        self,
        registry: RegistryDep,
        site_id: SiteIdQuery = None,
        limit: LimitQuery = DEFAULT_LIMIT,
        cursor: CursorQuery = None,
    ) -> AssetPage:
        """Registered assets (optionally of one site) by asset id, a page at a time."""
        page = pager("assets", AssetKey, limit=limit, cursor=cursor, site_id=site_id)
        found = await registry.list_assets(site_id, after=page.after, limit=page.fetch)
        rows, next_cursor = page.page(found, asset_key)
        return AssetPage(items=[asset_out(a) for a in rows], next=next_cursor)

    @get("/assets/{asset_id:str}", responses=problem_responses(400, 401, 404))
    async def get_asset(self, registry: RegistryDep, asset_id: AssetIdPath) -> AssetOut:
        """One asset."""
        return asset_out(await registry.get_asset(asset_id))
