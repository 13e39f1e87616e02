"""Fixtures of the browser tier: the real system per test module, Chromium, a page per test.

One system (headend, gateways for examples/site-a.yaml and site-b.yaml, PostgreSQL
database) and one Chromium are shared by the tests of a module: starting them takes
seconds a test need not pay again. Each test gets a fresh browser context, so cookies (the
console's session) never leak from one test to the next. Module-scoped async fixtures run
on the module's event loop, so the tests using them say ``loop_scope="module"`` too
(``pytestmark = pytest.mark.asyncio(loop_scope="module")``).

A failing test that used ``page`` leaves a full-page screenshot and the page's HTML in
``test-artifacts/browser/<test name>.png|.html`` (the report names them): what the user
would have seen is the first thing to look at.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import pytest_asyncio
from browser_system import Console, start_console
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
#: The machine's network is closed: without these Chromium keeps trying to reach its
#: update, sync and field-trial servers and floods the log with refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CALL_REPORT = pytest.StashKey[pytest.TestReport]()


def artifact_paths(item: pytest.Item) -> tuple[Path, Path]:
    """(screenshot, html) for a failed browser test, under the repo's test-artifacts/."""
    out = item.config.rootpath / "test-artifacts" / "browser"
    stem = re.sub(r"[^\w.-]+", "_", item.name)
    return out / f"{stem}.png", out / f"{stem}.html"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember the call-phase report of tests using ``page``, so the ``page`` fixture's
    teardown (which runs on the page's event loop, unlike this hook) saves what the browser
    showed when the test failed; the failure report names the files."""
    report = yield
    if report.when == "call" and "page" in getattr(item, "fixturenames", ()):
        item.stash[CALL_REPORT] = report
        if report.failed:
            png, html = artifact_paths(item)
            report.sections.append(("browser artifacts", f"screenshot: {png}\nhtml: {html}"))
    return report


@pytest.fixture(scope="module")
def module_db(pg_server_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database for one test module (cloned from the run's template)."""
    parts = urlsplit(pg_server_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    src = urlsplit(migrated_template).path.lstrip("/")
    name = f"vpp_browser_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{src}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def console(
    tmp_path_factory: pytest.TempPathFactory, module_db: str
) -> AsyncIterator[Console]:
    """Headend with an operator and a viewer token, gateways of site-a (12 assets) and
    site-b (5 assets) connected and reporting every second; shared by the module."""
    async with start_console(
        tmp_path_factory.mktemp("console"), module_db, ("site-a", "site-b")
    ) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bare_console(
    tmp_path_factory: pytest.TempPathFactory, module_db: str
) -> AsyncIterator[Console]:
    """A headend with the two tokens and no sites (quick: for tests of the stack itself)."""
    async with start_console(tmp_path_factory.mktemp("bare"), module_db) as c:
        yield c


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    """Debian's Chromium; a clear failure (not a skip) when it is not installed."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium "
            "(apt-get install -y chromium)",
            pytrace=False,
        )
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium_executable: Path) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(chromium_executable), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A page in a fresh browser context (no cookies); on failure, screenshot and HTML."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    try:
        tab = await context.new_page()
        yield tab
        report = request.node.stash.get(CALL_REPORT, None)
        if report is not None and report.failed:
            await _save_artifacts(tab, request.node)
    finally:
        await context.close()


async def _save_artifacts(tab: Page, item: pytest.Item) -> None:
    png, html = artifact_paths(item)
    png.parent.mkdir(parents=True, exist_ok=True)
    try:
        await tab.screenshot(path=str(png), full_page=True, timeout=10_000)
        html.write_text(await tab.content())
    except Exception as exc:  # the page may have crashed or closed: say so, keep the failure
        print(f"browser artifacts of {item.nodeid} not saved: {exc!r}")
        return
    print(f"browser artifacts of {item.nodeid}: {png} {html}")
