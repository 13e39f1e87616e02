"""GET /sites, /sites/{site_id}, /assets, /assets/{asset_id}."""

from __future__ import annotations

from litestar import Controller, get

from .deps import RegistryDep
from .params import AssetIdPath, SiteIdPath, SiteIdQuery
from .problems import problem_responses
from .schemas import AssetOut, SiteOut, asset_out, site_out


class RegistryController(Controller):
    """The asset registry, read-only (import with `vpp-headend assets import`)."""

    tags = ["registry"]  # noqa: RUF012

    @get("/sites", responses=problem_responses(401))
    async def list_sites(self, registry: RegistryDep) -> list[SiteOut]:
        """Every registered site."""
        return [site_out(s) for s in await registry.list_sites()]

    @get("/sites/{site_id:str}", responses=problem_responses(400, 401, 404))
    async def get_site(self, registry: RegistryDep, site_id: SiteIdPath) -> SiteOut:
        """One site with its assets."""
        return site_out(await registry.get_site(site_id), detail=True)

    @get("/assets", responses=problem_responses(400, 401, 422))
    async def list_assets(
        self,
        registry: RegistryDep,
        site_id: SiteIdQuery = None,
    ) -> list[AssetOut]:
        """Registered assets, optionally of one site."""
        return [asset_out(a) for a in await registry.list_assets(site_id)]

    @get("/assets/{asset_id:str}", responses=problem_responses(400, 401, 404))
    async def get_asset(self, registry: RegistryDep, asset_id: AssetIdPath) -> AssetOut:
        """One asset."""
        return asset_out(await registry.get_asset(asset_id))
