"""The OpenAPI pages under /schema work with no network but the headend's (air-gapped
control rooms): every script, style sheet and link is served by the headend itself, is
the vendored file (checksums in web/vendor/README.md), and the pages' CSP allows this
origin only. The document names its request bodies, ids and summaries readably.
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath

from vpp_headend.api.openapi import OPERATIONS, STATIC_PATH, VENDOR_DIR, openapi_config

PAGES = ["/schema", "/schema/redoc", "/schema/swagger"]
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


class _Refs(HTMLParser):
    """Every URL a page names (``src``, ``href``, ``spec-url``…) and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and (name in ("src", "href", "action") or name.endswith("url")):
                self.urls.append((tag, value))
        self._in_script = tag == "script" and not dict(attrs).get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def _refs(page: str) -> _Refs:
    parser = _Refs()
    parser.feed(page)
    return parser


def _vendored_sha256() -> dict[str, str]:
    """``{"redoc/redoc.standalone.js": sha256}`` from the README's checksum block."""
    readme = (VENDOR_DIR / "README.md").read_text()
    found = re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.MULTILINE)
    return {path: digest for digest, path in found}


def _csp(resp: httpx.Response) -> dict[str, list[str]]:
    policy = resp.headers["content-security-policy"]
    return {
        name: values
        for name, *values in (part.split() for part in policy.split(";") if part.strip())
    }


@pytest.fixture
async def http(start_headend: Any) -> httpx.AsyncClient:
    """A headend that requires a token everywhere but /schema, /health and /ready."""
    running = await start_headend(rest_auth="required")
    client: httpx.AsyncClient = running.http
    return client


async def test_the_vendored_files_match_the_readme() -> None:
    sums = _vendored_sha256()
    assert {"swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css"} <= set(sums)
    assert "redoc/redoc.standalone.js" in sums
    for path, digest in sums.items():
        assert hashlib.sha256((VENDOR_DIR / path).read_bytes()).hexdigest() == digest, path
    for bundle in ("swagger-ui", "redoc"):
        assert (VENDOR_DIR / bundle / "LICENSE").is_file()


@pytest.mark.parametrize("path", PAGES)
async def test_a_schema_page_loads_everything_from_the_headend_without_a_token(
    http: httpx.AsyncClient, path: str
) -> None:
    page = await http.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    refs = _refs(page.text)
    assert refs.urls, "the page names its scripts"
    assert refs.inline_scripts == []  # the CSP allows no inline script
    sums = _vendored_sha256()
    scripts = 0
    for tag, url in refs.urls:
        parts = urlsplit(url)
        assert not parts.scheme, f"{path} loads {url} from elsewhere"
        assert not parts.netloc, f"{path} loads {url} from elsewhere"
        assert parts.path.startswith("/schema/"), url
        asset = await http.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"]
        if tag == "script":
            scripts += 1
            assert "javascript" in kind, (url, kind)
        elif url.endswith(".json") or "openapi" in url:
            assert "json" in kind, (url, kind)
        else:
            assert kind.startswith("text/css"), (url, kind)
        if parts.path.startswith(f"{STATIC_PATH}/"):
            vendored = parts.path.removeprefix(f"{STATIC_PATH}/")
            assert hashlib.sha256(asset.content).hexdigest() == sums[vendored], url
    assert scripts >= 1


@pytest.mark.parametrize("path", [*PAGES, "/schema/openapi.json", f"{STATIC_PATH}/redoc/LICENSE"])
async def test_the_schema_csp_allows_this_origin_only(http: httpx.AsyncClient, path: str) -> None:
    resp = await http.get(path)
    assert resp.status_code == 200
    csp = _csp(resp)
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]  # no inline script, no eval
    assert csp["frame-ancestors"] == ["'none'"]
    for name, values in csp.items():
        for value in values:
            assert value in ("'self'", "'none'", "'unsafe-inline'", "data:", "blob:"), (name, value)
        if name != "style-src":
            assert "'unsafe-inline'" not in values, name


async def test_an_unknown_schema_asset_is_a_404(http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{STATIC_PATH}/redoc/nope.js")).status_code == 404


async def test_the_dispatch_bodies_are_documented(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/schema/openapi.json")).json()

    def body_schema(path: str) -> dict[str, Any]:
        content = doc["paths"][path]["post"]["requestBody"]["content"]
        ref = content["application/json"]["schema"]["$ref"]
        schema: dict[str, Any] = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        return schema

    dispatch = body_schema("/dispatch")
    props = dispatch["properties"]
    assert dispatch["required"] == ["power_kw"]
    assert props["power_kw"]["type"] == "number"
    optional = ["asset_id", "site_id", "group_id", "ttl_s", "expires_at", "duration_s", "ends_at"]
    assert set(props) == {"power_kw", *optional}
    for name in ["power_kw", *optional]:
        assert props[name].get("description"), name
    for name in optional:
        assert {"type": "null"} in props[name]["oneOf"], name
    assert props["asset_id"]["pattern"].startswith("^[A-Za-z0-9._-]{1,64}$")
    assert {"type": "string", "format": "date-time"} in props["ends_at"]["oneOf"]
    cancel = body_schema("/dispatch/{dispatch_id}/cancel")
    assert set(cancel["properties"]) == {"reason"}
    assert cancel["properties"]["reason"]["description"]
    # a cancel may come with no body at all; a dispatch may not
    assert doc["paths"]["/dispatch"]["post"]["requestBody"]["required"] is True
    cancel_body = doc["paths"]["/dispatch/{dispatch_id}/cancel"]["post"]["requestBody"]
    assert cancel_body.get("required", False) is False


async def test_operations_have_readable_unique_ids_and_summaries(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/schema/openapi.json")).json()
    ops = {
        f"{method.upper()} {path}": op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))
    for key, op in ops.items():
        assert re.fullmatch(r"[a-z][A-Za-z]+", op["operationId"]), (key, op["operationId"])
        assert op["summary"][:1].isupper(), (key, op["summary"])
        assert " " in op["summary"], (key, op["summary"])  # words, not "Listsites"
    by_key = {key: op["operationId"] for key, op in ops.items()}
    assert by_key["POST /dispatch"] == "createDispatch"
    assert by_key["POST /dispatch/{dispatch_id}/cancel"] == "cancelDispatch"
    assert by_key["GET /sites"] == "listSites"
    assert by_key["GET /sites/{site_id}"] == "getSite"
    assert by_key["GET /telemetry/{asset_id}"] == "getLatestTelemetry"
    assert by_key["GET /telemetry/{asset_id}/history"] == "getTelemetryHistory"
    assert by_key["GET /dispatches"] == "listDispatches"
    assert by_key["GET /health"] == "getHealth"
    assert ops["GET /sites"]["summary"] == "List sites"
    for key, (op_id, _) in OPERATIONS.items():
        if key in ops:
            assert ops[key]["operationId"] == op_id


async def test_a_route_missing_from_the_table_still_gets_an_id_and_a_summary() -> None:
    @get("/spare-parts/{part_id:str}/stock", sync_to_thread=False)
    def spare_part_stock(part_id: FromPath[str]) -> str:
        return part_id

    app = Litestar([spare_part_stock], openapi_config=openapi_config("1"))
    op = app.openapi_schema.to_schema()["paths"]["/spare-parts/{part_id}/stock"]["get"]
    assert op["operationId"] == "getSparePartsByPartIdStock"
    assert op["summary"] == "Spare part stock"
