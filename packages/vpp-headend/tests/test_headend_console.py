"""The operator console's server side: pages render from the running headend, sign-in
sets the session cookie the API also accepts, viewers get no dispatch controls, form
errors land next to their field, and forms from other origins are refused.

The browser walks the same pages in tests/browser/test_console.py.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from vpp_headend.auth import SESSION_COOKIE, hash_token, new_token
from vpp_headend.db.registry_repo import SiteOverview
from vpp_headend.db.security_repo import insert_token
from vpp_headend.domain import GatewayView
from vpp_headend.web.render import environment
from vpp_headend.web.views import (
    ALERT_ROWS,
    FLEET_PAGE_SIZE,
    Alerts,
    FleetCache,
    FleetQuery,
    FleetRow,
    fleet_page,
    offline_gateways,
)

ORIGIN = {"Origin": "http://testserver"}


async def _token(running: Any, role: str) -> str:
    token_id, token = new_token()
    await insert_token(running.headend.engine, token_id, f"console {role}", role, hash_token(token))
    return token


async def _signed_in(running: Any, role: str) -> dict[str, str]:
    token = await _token(running, role)
    resp = await running.http.post(
        "/ui/sign-in", data={"token": token, "next": "/ui/alerts"}, headers=ORIGIN
    )
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/ui/alerts"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    running.http.cookies.clear()  # each request below says who it is
    return {"Cookie": f"{SESSION_COOKIE}={token}"}


async def test_fleet_and_site_pages_show_the_gateway_and_its_readings(
    running: Any, agents: Any, site_yaml: Any, eventually: Any
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1", "a-2"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1", "a-2"])
    agent.send(telemetry=agent.telemetry("a-1", 12.5, seq=1))
    agent.send(telemetry=agent.telemetry("a-2", 7.5, seq=1))

    async def reported() -> bool:
        page = (await running.http.get("/ui/sites/site-a")).text
        return "12.5" in page and "7.5" in page

    await eventually(reported, 5, "the site page never showed both readings")

    async def totalled() -> bool:  # the fleet page reads the stored latest values
        return "20.0" in _row((await running.http.get("/ui/")).text, "site-a")

    await eventually(totalled, 5, "the fleet page never showed the site's power")
    fleet = await running.http.get("/ui/")
    assert fleet.status_code == 200
    assert fleet.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in fleet.headers["content-security-policy"]
    row_a = _row(fleet.text, "site-a")
    assert '<td data-col="gateway">online</td>' in row_a
    assert "20.0" in row_a  # site power: 12.5 + 7.5
    assert '<td data-col="gateway">offline</td>' in _row(fleet.text, "site-b")
    assert (await running.http.get("/")).headers["location"] == "/ui/"

    site = (await running.http.get("/ui/sites/site-a")).text
    assert '<dd id="site-power" data-keep>20.0</dd>' in site
    assert site.count('<tr data-asset-id="') == 2
    missing = await running.http.get("/ui/sites/nowhere")
    assert missing.status_code == 404
    assert "unknown site" in missing.text

    # offline first; a filter by state or by site id; bad query values answered on the page
    assert fleet.text.index('data-site-id="site-b"') < fleet.text.index('data-site-id="site-a"')
    assert "1 of 2 gateways online." in fleet.text
    troubled = (await running.http.get("/ui/?show=problems")).text
    assert 'data-site-id="site-b"' in troubled
    assert 'data-site-id="site-a"' not in troubled
    assert '<option value="problems" selected>' in troubled
    found = (await running.http.get("/ui/?find=A")).text
    assert 'data-site-id="site-a"' in found
    assert 'data-site-id="site-b"' not in found
    assert "Sites 1–1 of 1 matching" in found
    for query, named in (("page=0", "page must be"), ("page=x", "page must be"),
                         ("show=bogus", "show must be all or problems"),
                         ("find=" + "s" * 65, "find must be at most 64")):  # fmt: skip
        refused = await running.http.get(f"/ui/?{query}")
        assert refused.status_code == 422, query
        assert named in refused.text, refused.text


async def test_sign_in_sets_a_cookie_the_api_accepts_and_viewers_cannot_dispatch(
    running: Any, site_yaml: Any
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    viewer = await _signed_in(running, "viewer")
    operator = await _signed_in(running, "operator")
    http = running.http

    anonymous = await http.get("/ui/sites/site-a")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/ui/sign-in?next=/ui/sites/site-a"
    wrong = await http.post("/ui/sign-in", data={"token": "vpp_x_nope"}, headers=ORIGIN)
    assert wrong.status_code == 401
    assert "unknown or revoked" in wrong.text

    # the cookie works on the JSON API (the console's history charts use it)
    assert (await http.get("/sites", headers=viewer)).status_code == 200
    page = (await http.get("/ui/dispatch", headers=viewer)).text
    assert "Signed in as viewer" in page
    assert "Send dispatch" not in page
    refused = await http.post(
        "/ui/dispatch",
        data={"target_type": "asset", "target_id": "a-1", "power_kw": "5"},
        headers={**viewer, **ORIGIN},
    )
    assert refused.status_code == 403
    assert (await http.get("/dispatches", headers=viewer)).json()["items"] == []

    page = (await http.get("/ui/dispatch", headers=operator)).text
    assert "Send dispatch" in page
    sent = await http.post(
        "/ui/dispatch",
        data={"target_type": "asset", "target_id": "a-1", "power_kw": "5", "duration_s": "60"},
        headers={**operator, **ORIGIN},
    )
    assert sent.status_code == 303, sent.text
    dispatch_id = sent.headers["location"].rsplit("/", 1)[1]
    stored = (await http.get(f"/dispatch/{dispatch_id}", headers=operator)).json()
    assert stored["power_kw"] == 5.0
    assert stored["duration_s"] == 60.0
    one = (await http.get(f"/ui/dispatch/{dispatch_id}", headers=operator)).text
    assert "Cancel dispatch" in one
    assert (
        "Cancel dispatch"
        not in (await http.get(f"/ui/dispatch/{dispatch_id}", headers=viewer)).text
    )

    out = await http.post("/ui/sign-out", headers={**operator, **ORIGIN})
    assert out.status_code == 303
    assert f"{SESSION_COOKIE}=" in out.headers["set-cookie"]
    assert "max-age=0" in out.headers["set-cookie"].lower()


async def test_form_errors_are_shown_next_to_their_field_with_the_values_kept(
    running: Any, site_yaml: Any
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    cases = [
        ({"power_kw": "abc"}, "power_kw", "power_kw must be a number"),
        ({"power_kw": "1e309"}, "power_kw", "power_kw must be a finite number"),
        ({"power_kw": "5", "target_id": "nowhere"}, "target_id", "unknown site"),
        ({"power_kw": "5", "ttl_s": "-3"}, "ttl_s", "ttl_s must be a positive number"),
        ({"power_kw": "5", "duration_s": "0"}, "duration_s", "duration_s must be a positive"),
        ({"power_kw": "5", "target_id": "bad id!"}, "target_id", "must be 1 to 64 of"),
    ]
    for fields, field, message in cases:
        data = {"target_type": "site", "target_id": "site-a", **fields}
        resp = await running.http.post("/ui/dispatch", data=data, headers=ORIGIN)
        assert resp.status_code in (404, 422), (fields, resp.status_code)
        html = resp.text
        error = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', html)
        assert error is not None, (fields, html)
        assert message in error.group(1), (fields, error.group(1))
        field_input = re.search(rf'<(?:input|select) id="{field}"[^>]*>', html, re.S)
        assert field_input is not None
        assert 'aria-invalid="true"' in field_input.group(0)
        assert f'aria-describedby="{field}-error"' in field_input.group(0)
        for name, value in data.items():  # what was typed is kept
            if name != "target_type":
                assert (
                    f'id="{name}" name="{name}" type="text" value="{value}"'
                    in html.replace("&#34;", '"')
                    or value in html
                ), (name, value)
    assert (await running.http.get("/dispatches")).json()["items"] == []


async def test_forms_from_another_origin_are_refused(running: Any, site_yaml: Any) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    data = {"target_type": "asset", "target_id": "a-1", "power_kw": "5"}
    for headers in (
        {"Origin": "https://evil.example"},
        {},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example", "X-Forwarded-Host": "vpp.example.net"},
    ):
        resp = await running.http.post("/ui/dispatch", data=data, headers=headers)
        assert resp.status_code == 403, headers
    # behind a proxy that rewrites Host, the browser's host is in X-Forwarded-Host
    proxied = await running.http.post(
        "/ui/dispatch",
        data=data,
        headers={"Origin": "https://vpp.example.net", "X-Forwarded-Host": "vpp.example.net"},
    )
    assert proxied.status_code == 303
    same = await running.http.post(
        "/ui/dispatch", data=data, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert same.status_code == 303
    assert len((await running.http.get("/dispatches")).json()["items"]) == 2
    # the JSON API still refuses a form body (a cross-origin page could send one)
    api = await running.http.post("/dispatch", data={"asset_id": "a-1", "power_kw": "5"})
    assert api.status_code == 415


async def test_sign_in_never_redirects_off_site(running: Any) -> None:
    token = await _token(running, "viewer")
    for target, expected in (
        ("https://evil.example/", "/ui/"),
        ("//evil.example/", "/ui/"),
        ("/ui/sites/x", "/ui/sites/x"),
    ):
        resp = await running.http.post(
            "/ui/sign-in", data={"token": token, "next": target}, headers=ORIGIN
        )
        assert resp.headers["location"] == expected


async def test_static_assets_are_served_from_the_wheel(running: Any) -> None:
    js = await running.http.get("/ui/static/console.js")
    assert js.status_code == 200
    assert "EventSource" in js.text
    css = await running.http.get("/ui/static/console.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert (await running.http.get("/ui/static/../app.py")).status_code == 404


async def test_alerts_list_offline_gateways_lagging_assets_and_expired_dispatches(
    running: Any, agents: Any, site_yaml: Any, eventually: Any
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1", "a-2"]))
    await running.import_site(site_yaml("site-b", ["b-1"]))
    agent = await agents(running.grpc_port, "site-a")
    await agent.register(["a-1", "a-2"])
    agent.send(telemetry=agent.telemetry("a-1", 1.0, ts=datetime.now(UTC) - timedelta(minutes=5)))
    agent.send(telemetry=agent.telemetry("a-2", 1.0))
    # site-b has no gateway: a dispatch to it waits, then expires
    expired = await running.dispatch(site_id="site-b", power_kw=1.0, ttl_s=0.3)
    await running.wait_state(expired["dispatch_id"], "expired")

    async def listed() -> bool:
        html = (await running.http.get("/ui/alerts")).text
        return "/ui/assets/a-1" in html

    await eventually(listed, 5, "the late asset never showed as lagging")
    html = (await running.http.get("/ui/alerts")).text
    offline, dispatches, lagging = (
        html.split(f'id="h-{part}"', 1)[1].split("</section>", 1)[0]
        for part in ("offline", "dispatch", "lag")
    )
    assert 'data-site-id="site-b"' in offline
    assert "never connected" in offline
    assert "site-a" not in offline
    assert expired["dispatch_id"] in dispatches
    assert "expired" in dispatches
    assert "/ui/assets/a-1" in lagging
    assert "a-2" not in lagging


def _row(html: str, site_id: str) -> str:
    match = re.search(rf'<tr data-site-id="{site_id}".*?</tr>', html, re.S)
    assert match is not None, html
    return match.group(0)


def test_the_fleet_page_lists_offline_then_stale_sites_first_and_pages_the_rest() -> None:
    since = datetime(2026, 12, 1, tzinfo=UTC)

    def row(site_id: str, connected: bool | None, stale: bool = False) -> FleetRow:
        gateway = (
            None
            if connected is None
            else GatewayView(site_id, connected, since, since, (), None, None)
        )
        return FleetRow(SiteOverview(site_id, 4.0, 10), gateway, None, None, stale)

    rows = [row(f"s-{n:03d}", connected=True) for n in range(244)]
    rows += [row("s-900", None), row("s-100x", True, stale=True), row("s-050x", None)]
    rows += [row("s-777", False)]  # its gateway went offline
    first = fleet_page(rows, FleetQuery())
    assert (first.sites, first.online, first.stale, first.matching) == (248, 245, 1, 248)
    assert first.pages == 3
    ids = [r.site.site_id for r in first.rows]
    assert len(ids) == FLEET_PAGE_SIZE == 100
    # gone offline, stale, never connected, then the rest by id
    assert ids[:5] == ["s-777", "s-100x", "s-050x", "s-900", "s-000"]
    last = fleet_page(rows, FleetQuery(page=3))
    assert [r.site.site_id for r in last.rows][-1] == "s-243"
    assert (len(last.rows), last.first) == (48, 201)
    every = [r.site.site_id for p in (1, 2, 3) for r in fleet_page(rows, FleetQuery(page=p)).rows]
    assert sorted(every) == sorted(r.site.site_id for r in rows)  # each site on one page
    assert fleet_page(rows, FleetQuery(page=4)).rows == ()

    troubled = fleet_page(rows, FleetQuery(show="problems"))
    assert [r.site.site_id for r in troubled.rows] == ["s-777", "s-100x", "s-050x", "s-900"]
    assert fleet_page(rows, FleetQuery(find="X")).matching == 2  # case-insensitive
    query = FleetQuery(show="problems", find="s-1 &x", page=2)
    assert query.href(3) == "/ui/?show=problems&find=s-1+%26x&page=3"
    assert FleetQuery().href(1) == "/ui/"


async def test_the_fleet_rows_are_built_once_per_interval_for_every_browser(
    running: Any, site_yaml: Any
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    clock = [100.0]
    cache = FleetCache(1.0, monotonic=lambda: clock[0])
    together = await asyncio.gather(*(cache.rows(running.headend) for _ in range(5)))
    assert cache.builds == 1  # five requests at once: one build
    assert [[r.site.site_id for r in rows] for rows in together] == [["site-a"]] * 5
    await running.import_site(site_yaml("site-b", ["b-1"]))
    clock[0] += 0.5
    assert [r.site.site_id for r in await cache.rows(running.headend)] == ["site-a"]
    clock[0] += 0.5  # as old as the live feed may be: built again, site-b in it
    assert [r.site.site_id for r in await cache.rows(running.headend)] == ["site-a", "site-b"]
    assert cache.builds == 2


def test_the_alerts_page_lists_the_first_gateways_offline_and_counts_them_all() -> None:
    since = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [
        FleetRow(
            SiteOverview(f"s-{n:04d}", 4.0, 10),
            # every third never connected; the others' gateways went offline
            None if n % 3 == 0 else GatewayView(f"s-{n:04d}", False, None, since, (), None, None),
            None,
            None,
            False,
        )
        for n in range(1500)
    ]
    online = GatewayView("s-up", True, since, since, (), None, None)
    rows.append(FleetRow(SiteOverview("s-up", 4.0, 10), online, None, None, False))
    shown, total = offline_gateways(rows)
    assert total == 1500
    assert len(shown) == ALERT_ROWS == 100
    assert [g.site_id for g in shown[:2]] == ["s-0001", "s-0002"]  # gone offline first
    assert all(g.last_seen == since for g in shown)  # no never-connected one made the cut
    assert "s-up" not in {g.site_id for g in shown}
    html = (
        environment()
        .get_template("alerts.html")
        .render(
            who=None,
            may_dispatch=False,
            path="/ui/alerts",
            nav="alerts",
            troubled=[],
            alerts=Alerts(shown, total, ()),
        )
    )
    assert html.count('<tr data-site-id="') == 100
    assert "100 of 1500 shown" in html
    assert 'href="/ui/?show=problems"' in html
