"""The operator console (issue 18) walked as a user would, in Chromium, on the real system.

Written against the console contract: pages are found by role, label and caption, the way
a screen reader or a person finds them. Live behaviour (telemetry, gateway state, a
dispatch reaching "applied") is checked without reloading: a marker set on ``window``
before the change is still there after it.

The module shares one system (headend, site-a's and site-b's gateways). Tests leave
site-a online; site-b is the one whose gateway the tests stop, and each test that needs it
online or offline makes it so first, so the tests do not depend on their order.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from browser_system import (
    DISPATCH_TIMEOUT_MS,
    LIVE_TIMEOUT_MS,
    PAGE_TIMEOUT_MS,
    Console,
    cell,
    number,
    sign_in,
)
from e2e_system import FINAL
from playwright.async_api import Locator, Page, expect

pytestmark = pytest.mark.asyncio(loop_scope="module")

FLEET_HEADERS = [
    "Site",
    "Gateway",
    "Since",
    "Last seen",
    "Replica",
    "Agent",
    "Assets",
    "Worst lag (s)",
    "Power (kW)",
]
SITE_HEADERS = [
    "Asset",
    "Kind",
    "Power (kW)",
    "SoC (%)",
    "Status",
    "Setpoint (kW)",
    "Envelope (kW)",
    "Updated",
]
DISPATCH_ASSET_HEADERS = [
    "Asset",
    "Site",
    "Requested (kW)",
    "Allocated (kW)",
    "Delivered (kW)",
    "State",
    "Reason",
]
UUID_PATH = re.compile(
    r"/ui/dispatch/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


def h1(page: Page) -> Locator:
    return page.get_by_role("heading", level=1)


def sites_table(page: Page) -> Locator:
    return page.get_by_role("table", name="Sites", exact=True)


def gateway_cell(page: Page, site_id: str) -> Locator:
    return sites_table(page).locator(f'tr[data-site-id="{site_id}"] [data-col="gateway"]')


def dispatch_form(page: Page) -> Locator:
    return page.get_by_role("form", name="New dispatch", exact=True)


async def mark_page(page: Page) -> None:
    """Set a marker that a reload or a navigation would wipe."""
    await page.evaluate("window.__marker = 1")


async def assert_not_reloaded(page: Page) -> None:
    assert await page.evaluate("window.__marker") == 1, "the page was reloaded"


async def fill_dispatch(
    page: Page,
    *,
    target_type: str,
    target_id: str,
    power_kw: str,
    ttl_s: str = "",
    duration_s: str = "",
) -> None:
    """Fill the "New dispatch" form and press "Send dispatch"."""
    form = dispatch_form(page)
    await form.get_by_label("Target type", exact=True).select_option(target_type)
    await form.get_by_label("Target id", exact=True).fill(target_id)
    await form.get_by_label("Power (kW)", exact=True).fill(power_kw)
    if ttl_s:
        await form.get_by_label("TTL (s)", exact=True).fill(ttl_s)
    if duration_s:
        await form.get_by_label("Duration (s)", exact=True).fill(duration_s)
    await form.get_by_role("button", name="Send dispatch", exact=True).click()


async def send_site_dispatch(page: Page, console: Console, power_kw: str, **extra: str) -> str:
    """Sign in as operator, send a dispatch to site-a from the form; its id (from the URL
    of the page the form lands on)."""
    await sign_in(page, console, console.operator_token, "/ui/dispatch")
    await expect(h1(page)).to_have_text("Dispatch")
    await fill_dispatch(page, target_type="site", target_id="site-a", power_kw=power_kw, **extra)
    await expect(page).to_have_url(UUID_PATH, timeout=PAGE_TIMEOUT_MS)
    found = UUID_PATH.search(page.url)
    assert found, page.url
    dispatch_id = found[1]
    await expect(h1(page)).to_have_text(f"Dispatch {dispatch_id[:8]}")
    return dispatch_id


async def wait_final(console: Console, dispatch_id: str) -> dict[str, Any]:
    """The dispatch from the API once it settled (applied, or why not)."""
    return await console.system.wait_dispatch(
        dispatch_id, FINAL | {"partially_applied"}, timeout=DISPATCH_TIMEOUT_MS / 1000
    )


async def test_operator_signs_in_and_sees_site_a_online_with_its_assets(
    page: Page, console: Console
) -> None:
    await sign_in(page, console, console.operator_token)
    await expect(h1(page)).to_have_text("Fleet")
    await expect(page.get_by_text("Signed in as operator")).to_be_visible()
    nav = page.get_by_role("navigation", name="Console")
    for link in ("Fleet", "Dispatch", "Alerts"):
        await expect(nav.get_by_role("link", name=link, exact=True)).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_visible()

    table = sites_table(page)
    await expect(table.get_by_role("columnheader")).to_have_text(FLEET_HEADERS)
    row = table.locator('tr[data-site-id="site-a"]')
    await expect(row.get_by_role("link", name="site-a", exact=True)).to_have_attribute(
        "href", re.compile(r"/ui/sites/site-a$")
    )
    await expect(gateway_cell(page, "site-a")).to_have_text("online", timeout=LIVE_TIMEOUT_MS)
    # readings arrive every second: nowhere near 3 telemetry intervals behind
    await expect(row).not_to_have_class(re.compile(r"\bstale\b"))
    assets = await cell(table, row, "Assets")
    await expect(assets).to_have_text(str(len(console.asset_ids("site-a"))))
    assert len(console.asset_ids("site-a")) == 12

    # at fleet size the page is found by filtering: only site-b is left
    search = page.get_by_role("search", name="Sites")
    await search.get_by_label("Site id contains", exact=True).fill("site-b")
    await search.get_by_role("button", name="Filter", exact=True).click()
    await expect(page).to_have_url(
        re.compile(r"/ui/\?(.*&)?find=site-b(&|$)"), timeout=PAGE_TIMEOUT_MS
    )
    await expect(table.locator("tbody tr[data-site-id]")).to_have_count(1)
    await expect(table.locator('tr[data-site-id="site-b"]')).to_have_count(1)
    await expect(search.get_by_label("Site id contains", exact=True)).to_have_value("site-b")


async def test_a_wrong_token_is_refused(page: Page, console: Console) -> None:
    await page.goto(console.url("/ui/sign-in"))
    await expect(h1(page)).to_have_text("Sign in")
    token = page.get_by_label("Access token", exact=True)
    await expect(token).to_have_attribute("type", "password")
    await token.fill("vpp_00000000_not-a-token-this-headend-made")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("alert")).to_contain_text(
        "unknown or revoked", timeout=PAGE_TIMEOUT_MS
    )
    # still signed out: the fleet page sends us back to sign in
    await page.goto(console.url("/ui/"))
    await expect(page).to_have_url(re.compile(r"/ui/sign-in\?next="), timeout=PAGE_TIMEOUT_MS)


async def test_site_page_lists_its_assets_and_updates_live(page: Page, console: Console) -> None:
    await sign_in(page, console, console.operator_token, "/ui/sites/site-a")
    await expect(h1(page)).to_have_text("Site site-a")
    table = page.get_by_role("table", name="Assets", exact=True)
    await expect(table.get_by_role("columnheader")).to_have_text(SITE_HEADERS)
    rows = table.locator("tr[data-asset-id]")
    await expect(rows).to_have_count(12)
    shown = [await r.get_attribute("data-asset-id") for r in await rows.all()]
    assert sorted(str(s) for s in shown) == sorted(console.asset_ids("site-a"))
    bess = table.locator('tr[data-asset-id="site-a-bess-1"]')
    await expect(bess.get_by_role("link", name="site-a-bess-1", exact=True)).to_have_attribute(
        "href", re.compile(r"/ui/assets/site-a-bess-1$")
    )
    await expect(page.get_by_role("img", name="Live power chart", exact=True)).to_be_attached()
    # the history chart read the site's rollups from the JSON API with the session cookie
    # (data-points is set once the answer is drawn; a 401 would leave it unset)
    history = page.get_by_role("img", name="History chart", exact=True)
    await expect(history).to_have_attribute("data-points", re.compile(r"^\d+$"))
    await page.get_by_role("button", name="Last day", exact=True).click()
    await expect(page.get_by_role("button", name="Last day", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    await expect(page.get_by_role("button", name="Last hour", exact=True)).to_have_attribute(
        "aria-pressed", "false"
    )
    await expect(page.locator("#live")).to_have_text("Live", timeout=LIVE_TIMEOUT_MS)

    await mark_page(page)
    updated = bess.locator('[data-col="updated"]')
    before = await updated.inner_text()
    assert before.strip(), "the asset has readings: its Updated cell shows the latest"
    await expect(updated).not_to_have_text(before, timeout=LIVE_TIMEOUT_MS)
    await assert_not_reloaded(page)


async def test_dispatch_sent_from_the_form_is_applied_live(page: Page, console: Console) -> None:
    dispatch_id = await send_site_dispatch(page, console, "20")
    await mark_page(page)
    api = await wait_final(console, dispatch_id)
    assert api["state"] == "applied", api
    # the page follows the API without being reloaded
    await expect(page.locator("#dispatch-state")).to_have_text("applied", timeout=LIVE_TIMEOUT_MS)
    await assert_not_reloaded(page)

    allocated = {a["asset_id"]: float(a["allocation_kw"]) for a in api["allocations"]}
    assert sorted(allocated) == sorted(console.dispatchable_ids("site-a")), allocated

    table = page.get_by_role("table", name="Assets", exact=True)
    await expect(table.get_by_role("columnheader")).to_have_text(DISPATCH_ASSET_HEADERS)
    rows = table.locator("tr[data-asset-id]")
    await expect(rows).to_have_count(len(allocated))
    shown: dict[str, float] = {}
    for row in await rows.all():
        asset_id = str(await row.get_attribute("data-asset-id"))
        shown[asset_id] = number(await (await cell(table, row, "Allocated (kW)")).inner_text())
    assert sorted(shown) == sorted(allocated)
    for asset_id, kw in allocated.items():
        assert abs(shown[asset_id] - kw) <= 0.051, (asset_id, shown[asset_id], kw)
    assert abs(sum(shown.values()) - 20.0) <= 0.051 * len(shown), shown


@pytest.mark.parametrize("bad", ["abc", "1e309"])
async def test_a_bad_power_is_shown_next_to_its_field(
    page: Page, console: Console, bad: str
) -> None:
    await sign_in(page, console, console.operator_token, "/ui/dispatch")
    await fill_dispatch(
        page, target_type="site", target_id="site-a", power_kw=bad, ttl_s="30", duration_s="60"
    )
    form = dispatch_form(page)
    power = form.get_by_label("Power (kW)", exact=True)
    error = page.locator("#power_kw-error")
    await expect(error).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    await expect(error).not_to_be_empty()
    await expect(power).to_have_attribute("aria-invalid", "true")
    await expect(power).to_have_attribute("aria-describedby", "power_kw-error")
    # the message sits right after the field it is about
    await expect(power.locator("xpath=following-sibling::*[1]")).to_have_attribute(
        "id", "power_kw-error"
    )
    # what was typed is kept, and only the power is marked wrong
    await expect(power).to_have_value(bad)
    await expect(form.get_by_label("Target type", exact=True)).to_have_value("site")
    target_id = form.get_by_label("Target id", exact=True)
    await expect(target_id).to_have_value("site-a")
    await expect(target_id).not_to_have_attribute("aria-invalid", "true")
    await expect(form.get_by_label("TTL (s)", exact=True)).to_have_value("30")
    await expect(form.get_by_label("Duration (s)", exact=True)).to_have_value("60")


async def test_a_viewer_sees_pages_but_cannot_dispatch_or_cancel(
    page: Page, console: Console
) -> None:
    # a dispatch an operator could still cancel (in force for 10 min)
    dispatch_id = await console.system.dispatch(5.0, asset_id="site-a-bess-3", duration_s=600)
    await console.system.wait_dispatch(dispatch_id)

    await sign_in(page, console, console.viewer_token)
    await expect(h1(page)).to_have_text("Fleet")
    await expect(page.get_by_text("Signed in as viewer")).to_be_visible()
    await expect(gateway_cell(page, "site-a")).to_have_text("online", timeout=LIVE_TIMEOUT_MS)
    await expect(page.get_by_role("button", name="Send dispatch")).to_have_count(0)

    await page.goto(console.url("/ui/sites/site-a"))
    await expect(h1(page)).to_have_text("Site site-a")
    assets = page.get_by_role("table", name="Assets", exact=True)
    await expect(assets.locator("tr[data-asset-id]")).to_have_count(12)

    await page.goto(console.url("/ui/dispatch"))
    await expect(h1(page)).to_have_text("Dispatch")
    await expect(page.get_by_role("table", name="Dispatches", exact=True)).to_be_visible()
    await expect(dispatch_form(page)).to_have_count(0)
    await expect(page.get_by_role("button", name="Send dispatch")).to_have_count(0)

    await page.goto(console.url(f"/ui/dispatch/{dispatch_id}"))
    await expect(h1(page)).to_have_text(f"Dispatch {dispatch_id[:8]}")
    await expect(page.locator("#dispatch-state")).to_have_text("applied")
    await expect(page.get_by_role("button", name="Cancel dispatch")).to_have_count(0)


async def test_a_stopped_gateway_shows_offline_without_reload(page: Page, console: Console) -> None:
    await console.ensure_online("site-b")
    await sign_in(page, console, console.operator_token)
    await expect(gateway_cell(page, "site-b")).to_have_text("online", timeout=LIVE_TIMEOUT_MS)
    await expect(page.locator("#live")).to_have_text("Live", timeout=LIVE_TIMEOUT_MS)
    await mark_page(page)

    await console.gateways["site-b"].stop()
    await expect(gateway_cell(page, "site-b")).to_have_text("offline", timeout=LIVE_TIMEOUT_MS)
    row = sites_table(page).locator('tr[data-site-id="site-b"]')
    await expect(row).to_have_class(re.compile(r"\boffline\b"))
    await expect(gateway_cell(page, "site-a")).to_have_text("online")
    await assert_not_reloaded(page)


async def test_cancel_an_applied_dispatch(page: Page, console: Console) -> None:
    dispatch_id = await send_site_dispatch(page, console, "10", duration_s="600")
    assert (await wait_final(console, dispatch_id))["state"] == "applied"
    state = page.locator("#dispatch-state")
    await expect(state).to_have_text("applied", timeout=LIVE_TIMEOUT_MS)

    cancel = page.get_by_role("button", name="Cancel dispatch", exact=True)
    await cancel.click()
    await expect(state).to_have_text("cancelled", timeout=DISPATCH_TIMEOUT_MS)
    await expect(cancel).to_have_count(0)
    done = await console.system.wait_dispatch(dispatch_id, states=("cancelled",))
    assert done["state"] == "cancelled"


async def test_alerts_list_the_stopped_gateway(page: Page, console: Console) -> None:
    await console.ensure_offline("site-b")
    await sign_in(page, console, console.operator_token, "/ui/alerts")
    await expect(h1(page)).to_have_text("Alerts")
    for title in ("Gateways offline", "Dispatches failed, expired or short", "Lagging assets"):
        await expect(page.get_by_role("heading", level=2, name=title, exact=True)).to_be_visible()
    offline = page.get_by_role("heading", level=2, name="Gateways offline", exact=True)
    listed = offline.locator("xpath=following-sibling::*[1]")
    await expect(listed).to_contain_text("site-b", timeout=PAGE_TIMEOUT_MS)
    await expect(listed).not_to_contain_text("site-a")
