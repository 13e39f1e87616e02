"""The browser stack itself works: Chromium driven by Playwright against a real headend.

No console needed: the headend's open pages (``/health``, the OpenAPI document) render,
a screenshot is a real PNG, and the tokens the fixture made are enforced.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser_system import PAGE_TIMEOUT_MS, Console
from playwright.async_api import Page, expect

pytestmark = pytest.mark.asyncio(loop_scope="module")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def test_health_renders_and_screenshots(
    page: Page, bare_console: Console, tmp_path: Path
) -> None:
    response = await page.goto(bare_console.url("/health"))
    assert response is not None
    assert response.status == 200
    await expect(page.locator("body")).to_contain_text('"status"', timeout=PAGE_TIMEOUT_MS)
    assert json.loads(await page.locator("body").inner_text()) == {"status": "ok"}

    shot = tmp_path / "health.png"
    await page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE), data[:16]
    assert len(data) > 1000, len(data)


async def test_openapi_document_and_page_load(page: Page, bare_console: Console) -> None:
    response = await page.goto(bare_console.url("/schema/openapi.json"))
    assert response is not None
    assert response.status == 200
    doc = json.loads(await page.locator("body").inner_text())
    assert doc["info"]["title"] == "VPP headend"

    response = await page.goto(bare_console.url("/schema"))
    assert response is not None
    assert response.status == 200
    await expect(page).to_have_title(re.compile("VPP headend"), timeout=PAGE_TIMEOUT_MS)


async def test_tokens_from_the_cli_are_enforced(page: Page, bare_console: Console) -> None:
    """The fixture's tokens exist, so the REST API wants one: 401 without, 200 with."""
    response = await page.goto(bare_console.url("/gateways"))
    assert response is not None
    assert response.status == 401
    await page.set_extra_http_headers({"Authorization": f"Bearer {bare_console.viewer_token}"})
    response = await page.goto(bare_console.url("/gateways"))
    assert response is not None
    assert response.status == 200
    body = json.loads(await page.locator("body").inner_text())
    assert (body["items"] if isinstance(body, dict) else body) == [], "no site registered"
