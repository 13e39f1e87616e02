"""Hostile REST input over real HTTP (uvicorn on loopback, real PostgreSQL): deep nesting,
out-of-range datetimes, control characters in ids and non-JSON content types each get a
problem answer naming what is wrong; nothing is half-written and the headend still serves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from headend_waits import eventually
from sqlalchemy import text

from vpp_headend import create_app

DEEP = 100_000
OUT_OF_RANGE = [
    "9999-12-31T23:59:59-00:01",  # after 9999-12-31 once in UTC
    "0001-01-01T00:00:00+00:01",  # before 0001-01-01 once in UTC
]
CONTROL_IDS = ["x%00", "x%0A", "x%1F", "x%7F", "%00"]


@dataclass
class Served:
    """The headend's app behind a real uvicorn server, and a client speaking HTTP to it."""

    running: Any
    http: httpx.AsyncClient
    port: int

    async def raw(self, request_line: str, *headers: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request written byte for byte (no client-side path normalisation)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = "\r\n".join([request_line, "Host: 127.0.0.1", "Connection: close", *headers])
        writer.write(head.encode() + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        status_line, _, rest = answer.partition(b"\r\n")
        return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]

    async def dispatch_rows(self) -> int:
        async with self.running.headend.engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM dispatches"))).scalar_one())

    async def still_serves(self) -> None:
        """The headend answers and still creates a valid dispatch."""
        assert (await self.http.get("/health")).json() == {"status": "ok"}
        before = await self.dispatch_rows()
        ok = await self.http.post("/dispatch", json={"asset_id": "a-1", "power_kw": 2})
        assert ok.status_code == 202, ok.text
        assert await self.dispatch_rows() == before + 1


@pytest.fixture
async def served(running: Any, settings: Any, site_yaml: Any) -> AsyncIterator[Served]:
    await running.import_site(site_yaml("site-a", ["a-1"], groups=["g1"]))
    app = create_app(settings, running.headend)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, 10, "uvicorn did not start")  # only a flag
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield Served(running, http, port)
    finally:
        server.should_exit = True
        await task


def problem(resp: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


async def post_json(served: Served, body: bytes | str) -> httpx.Response:
    raw = body.encode() if isinstance(body, str) else body
    return await served.http.post(
        "/dispatch", content=raw, headers={"content-type": "application/json"}
    )


# -- nesting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '{"asset_id": "a-1", "power_kw": ' + "[" * DEEP + "]" * DEEP + "}",
        '{"asset_id": "a-1", "power_kw": 1, "x": ' + "[" * 100 + "]" * 100 + "}",
    ],
    ids=["arrays", "objects", "in-a-field", "a-hundred-deep"],
)
async def test_a_deeply_nested_body_is_a_400_and_nothing_is_written(
    served: Served, body: str
) -> None:
    found = problem(await post_json(served, body), 400)
    assert "nest" in found["detail"]
    assert await served.dispatch_rows() == 0
    await served.still_serves()


async def test_ordinary_nesting_still_gets_the_field_named(served: Served) -> None:
    # A shallow wrong shape is a 422 about the field, not a nesting refusal.
    resp = await post_json(served, '{"asset_id": "a-1", "power_kw": [[1]]}')
    problem(resp, 422, "power_kw")


# -- datetimes ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*OUT_OF_RANGE, "10000-01-01T00:00:00Z", "2030-01-01T00:00:00"])
async def test_an_unusable_expires_at_is_a_422_naming_it(served: Served, value: str) -> None:
    body = json.dumps({"asset_id": "a-1", "power_kw": 1, "expires_at": value})
    problem(await post_json(served, body), 422, "expires_at")
    assert await served.dispatch_rows() == 0
    await served.still_serves()


@pytest.mark.parametrize("route", ["history", "rollup"])
@pytest.mark.parametrize("param", ["start", "end"])
@pytest.mark.parametrize("value", [*OUT_OF_RANGE, "2026-01-01T00:00:00"])
async def test_an_unusable_window_bound_is_a_422_naming_it(
    served: Served, route: str, param: str, value: str
) -> None:
    resp = await served.http.get(f"/telemetry/a-1/{route}", params={param: value})
    found = problem(resp, 422, param)
    assert param in found["detail"]
    await served.still_serves()


async def test_the_widest_valid_window_is_answered(served: Served) -> None:
    params = {"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"}
    resp = await served.http.get("/telemetry/a-1/history", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.json()["readings"] == []


# -- ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [*CONTROL_IDS, "x" * 65])
@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("/assets/{}", "asset_id"),
        ("/sites/{}", "site_id"),
        ("/telemetry/{}", "asset_id"),
        ("/telemetry/{}/history", "asset_id"),
        ("/telemetry/{}/rollup", "asset_id"),
        ("/dispatch/{}", "dispatch_id"),
    ],
)
async def test_a_path_id_that_cannot_exist_is_a_404(
    served: Served, template: str, field: str, bad: str
) -> None:
    found = problem(await served.http.get(template.format(bad)), 404, field)
    if field != "dispatch_id":  # a dispatch id is a UUID: any other text is unknown
        assert "1 to 64 of A-Z a-z 0-9 . _ -" in found["detail"]
    await served.still_serves()


@pytest.mark.parametrize("path", ["/sites/..", "/assets/..", "/telemetry/../history"])
async def test_dot_segments_sent_as_is_are_a_404(served: Served, path: str) -> None:
    status, body = await served.raw(f"GET {path} HTTP/1.1")
    assert status == 404, body
    assert json.loads(body)["status"] == 404
    await served.still_serves()


@pytest.mark.parametrize("bad", [*CONTROL_IDS, "x" * 65, ""])
@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/dispatches", "asset_id"),
        ("/dispatches", "site_id"),
        ("/assets", "site_id"),
    ],
)
async def test_a_query_id_that_cannot_exist_is_a_422_naming_it(
    served: Served, path: str, param: str, bad: str
) -> None:
    found = problem(await served.http.get(f"{path}?{param}={bad}"), 422, param)
    assert found["detail"].startswith(f"{param}: must be 1 to 64")
    await served.still_serves()


async def test_a_control_character_in_the_state_filter_is_a_422(served: Served) -> None:
    problem(await served.http.get("/dispatches?state=applied%00"), 422, "state")


@pytest.mark.parametrize("target", ["asset_id", "site_id", "group_id"])
async def test_a_control_character_in_a_body_id_is_a_422_naming_it(
    served: Served, target: str
) -> None:
    body = json.dumps({target: "a-1\u0000", "power_kw": 1})
    problem(await post_json(served, body), 422, target)
    assert await served.dispatch_rows() == 0


@pytest.mark.parametrize("key", ["k\x00", "k\x1b[31m", "k\x7f"])
async def test_a_control_character_in_the_idempotency_key_is_a_422(running: Any, key: str) -> None:
    # Over the app directly: an HTTP/1.1 parser refuses these bytes before the app sees them.
    await running.import_site("site_id: site-a\nassets:\n  - {asset_id: a-1, kind: bess}\n")
    resp = await running.http.post(
        "/dispatch", json={"asset_id": "a-1", "power_kw": 1}, headers={"Idempotency-Key": key}
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "Idempotency-Key"
    assert (await running.http.get("/dispatches")).json()["items"] == []


# -- content type -------------------------------------------------------------------------

VALID = b'{"asset_id": "a-1", "power_kw": 1}'


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        None,
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/json; charset=latin-1",
        "",
    ],
)
async def test_a_body_that_is_not_declared_json_is_a_415(
    served: Served, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    resp = await served.http.post("/dispatch", content=VALID, headers=headers)
    found = problem(resp, 415)
    assert "application/json" in found["detail"]
    assert await served.dispatch_rows() == 0
    await served.still_serves()


async def test_a_bodiless_post_without_a_content_type_is_a_415(served: Served) -> None:
    status, body = await served.raw("POST /dispatch HTTP/1.1", "Content-Length: 0")
    assert status == 415, body
    assert json.loads(body)["status"] == 415
    assert await served.dispatch_rows() == 0


async def test_a_simple_cross_origin_form_post_creates_nothing(served: Served) -> None:
    # What a page on another origin can send without a preflight: a form post.
    status, _ = await served.raw(
        "POST /dispatch HTTP/1.1",
        "Origin: http://evil.example",
        "Content-Type: text/plain",
        f"Content-Length: {len(VALID)}",
        body=VALID,
    )
    assert status == 415
    assert await served.dispatch_rows() == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", 'Application/JSON;Charset="UTF-8"'],
)
async def test_json_with_or_without_a_utf8_charset_is_accepted(
    served: Served, content_type: str
) -> None:
    resp = await served.http.post(
        "/dispatch", content=VALID, headers={"content-type": content_type}
    )
    assert resp.status_code == 202, resp.text
    assert await served.dispatch_rows() == 1


async def test_the_415_comes_before_the_body_is_read(served: Served) -> None:
    deep = ("[" * DEEP + "]" * DEEP).encode()
    resp = await served.http.post("/dispatch", content=deep, headers={"content-type": "text/plain"})
    problem(resp, 415)


# -- the schema says so -------------------------------------------------------------------


async def test_the_schema_documents_the_body_the_id_pattern_and_the_refusals(
    served: Served,
) -> None:
    schema = (await served.http.get("/schema/openapi.json")).json()
    post = schema["paths"]["/dispatch"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json"}
    assert {"400", "415", "422"} <= set(post["responses"])
    asset = schema["paths"]["/assets/{asset_id}"]["get"]
    (param,) = (p for p in asset["parameters"] if p["name"] == "asset_id")
    assert param["schema"]["pattern"].startswith("^[A-Za-z0-9._-]{1,64}$")
    listing = schema["paths"]["/dispatches"]["get"]
    (query,) = (p for p in listing["parameters"] if p["name"] == "site_id")
    assert "pattern" in json.dumps(query["schema"])
