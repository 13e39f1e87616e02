"""REST API: validation names the field, one error shape everywhere, registry reads,
health, readiness, metrics and the OpenAPI schema."""

from __future__ import annotations

import json

import pytest

PROBLEM_KEYS = {"status", "title", "detail"}


def assert_problem(resp, status: int, field: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert "Traceback" not in resp.text
    if field is not None:
        assert body["field"] == field, body
    return body


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"asset_id": "a-1", "site_id": "site-a", "power_kw": 1}, 422, "site_id"),
        ({"power_kw": 1}, 422, "asset_id"),
        ({"asset_id": "a-1", "power_kw": float("nan")}, 422, "power_kw"),
        ({"asset_id": "a-1", "power_kw": float("inf")}, 422, "power_kw"),
        ({"asset_id": "a-1", "power_kw": "12"}, 422, "power_kw"),
        ({"asset_id": "a-1", "power_kw": True}, 422, "power_kw"),
        ({"asset_id": "a-1"}, 422, "power_kw"),
        ({"asset_id": "a-1", "power_kw": 1, "ttl_s": -5}, 422, "ttl_s"),
        ({"asset_id": "a-1", "power_kw": 1, "ttl_s": 0}, 422, "ttl_s"),
        (
            {"asset_id": "a-1", "power_kw": 1, "expires_at": "2001-01-01T00:00:00Z"},
            422,
            "expires_at",
        ),
        (
            {"asset_id": "a-1", "power_kw": 1, "expires_at": "2030-01-01T00:00:00"},
            422,
            "expires_at",
        ),
        ({"asset_id": "a-1", "power_kw": 1, "colour": "red"}, 422, "colour"),
        ({"asset_id": "bad id", "power_kw": 1}, 422, "asset_id"),
        ({"asset_id": "ghost", "power_kw": 1}, 404, "asset_id"),
        ({"site_id": "ghost", "power_kw": 1}, 404, "site_id"),
        ({"group_id": "ghost", "power_kw": 1}, 404, "group_id"),
        ({"asset_id": "m-1", "power_kw": 1}, 422, "asset_id"),
    ],
)
async def test_dispatch_validation(running, site_yaml, body, status, field) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    await running.import_site(site_yaml("site-m", ["m-1"], kind="meter"))
    # json.dumps writes NaN and Infinity as clients in many languages do.
    resp = await running.http.post(
        "/dispatch", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert_problem(resp, status, field)
    assert (await running.http.get("/dispatches")).json()["items"] == []  # nothing half-written


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"power"', b"\xff\xfe"])
async def test_unreadable_bodies_get_the_error_shape(running, raw) -> None:
    resp = await running.http.post(
        "/dispatch", content=raw, headers={"content-type": "application/json"}
    )
    assert resp.status_code in (400, 422)
    assert_problem(resp, resp.status_code)


async def test_routing_and_lookup_errors_share_the_shape(running) -> None:
    assert_problem(await running.http.get("/nope"), 404)
    assert_problem(await running.http.delete("/dispatches"), 405)
    assert_problem(await running.http.get("/dispatch/not-a-uuid"), 404, "dispatch_id")
    assert_problem(await running.http.get("/dispatch/6e0c4d3e-0000-4000-8000-000000000000"), 404)
    assert_problem(await running.http.get("/sites/ghost"), 404, "site_id")
    assert_problem(await running.http.get("/assets/ghost"), 404, "asset_id")
    assert_problem(await running.http.get("/telemetry/ghost"), 404, "asset_id")
    assert_problem(await running.http.get("/telemetry/ghost/history"), 404, "asset_id")


async def test_history_parameters_are_bounded(running, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    get = running.http.get
    assert_problem(await get("/telemetry/a-1/history", params={"limit": 0}), 422, "limit")
    assert_problem(await get("/telemetry/a-1/history", params={"limit": 10001}), 422, "limit")
    assert_problem(await get("/telemetry/a-1/history", params={"start": "yesterday"}), 422, "start")
    assert_problem(
        await get("/telemetry/a-1/history", params={"start": "2026-01-01T00:00:00"}), 422, "start"
    )
    assert_problem(
        await get(
            "/telemetry/a-1/history",
            params={"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        ),
        422,
        "start",
    )
    ok = await get("/telemetry/a-1/history", params={"limit": 5})
    assert ok.status_code == 200
    assert ok.json()["readings"] == []


async def test_registry_endpoints(running, site_yaml) -> None:
    await running.import_site(site_yaml("site-a", ["a-1", "a-2"], groups=["g1"]))
    await running.import_site(site_yaml("site-b", ["b-1"], kind="pv", capacity_kw=50))
    sites = (await running.http.get("/sites")).json()["items"]
    assert [s["site_id"] for s in sites] == ["site-a", "site-b"]
    assert sites[0]["groups"] == ["g1"]
    assert sites[0]["capacity_kw"] == 200.0
    site = (await running.http.get("/sites/site-b")).json()
    assert site["assets"][0] == {
        "asset_id": "b-1",
        "site_id": "site-b",
        "kind": "pv",
        "capacity_kw": 50.0,
        "min_kw": None,
        "max_kw": None,
        "energy_kwh": None,
    }
    assets = (await running.http.get("/assets")).json()["items"]
    assert [a["asset_id"] for a in assets] == ["a-1", "a-2", "b-1"]
    only_a = (await running.http.get("/assets", params={"site_id": "site-a"})).json()["items"]
    assert [a["asset_id"] for a in only_a] == ["a-1", "a-2"]
    assert (await running.http.get("/assets/a-2")).json()["site_id"] == "site-a"


async def test_health_ready_metrics_schema(running) -> None:
    assert (await running.http.get("/health")).json() == {"status": "ok"}
    ready = await running.http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["grpc_port"] == running.grpc_port
    metrics = await running.http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "vpp_gateways_connected",
        "vpp_assets_served",
        "vpp_telemetry_rows_stored_total",
        "vpp_ingest_queue_rows",
        "vpp_setpoint_ack_latency_seconds",
        "vpp_telemetry_lag_seconds",
    ):
        assert name in metrics.text
    schema = await running.http.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/dispatch" in schema.json()["paths"]


async def test_request_durations_are_exported_by_route_template(running, site_yaml) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await running.import_site(site_yaml("site-a", ["a-1"]))
    created = await running.http.post("/dispatch", json={"asset_id": "a-1", "power_kw": 3})
    assert created.status_code == 202
    dispatch_id = created.json()["dispatch_id"]
    for _ in range(2):
        assert (await running.http.get(f"/dispatch/{dispatch_id}")).status_code == 200
    missing = "6e0c4d3e-0000-4000-8000-000000000000"
    assert (await running.http.get(f"/dispatch/{missing}")).status_code == 404
    text = (await running.http.get("/metrics")).text
    counts = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for f in text_string_to_metric_families(text)
        if f.name == "vpp_http_request_duration_seconds"
        for s in f.samples
        if s.name.endswith("_count")
    }
    route = next(r for m, r, _ in counts if m == "GET" and r.startswith("/dispatch/"))
    assert dispatch_id not in text  # one series per route, not one per dispatch
    assert counts[("GET", route, "200")] == 2
    assert counts[("GET", route, "404")] == 1
    assert counts[("POST", "/dispatch", "202")] == 1


async def test_ready_is_503_when_the_grpc_server_is_down(start_headend) -> None:
    h = await start_headend()
    await h.stop()
    resp = await h.http.get("/ready")
    assert_problem(resp, 503)
    assert "gRPC" in resp.json()["detail"]


@pytest.mark.parametrize("path", ["/telemetry/a-1/history", "/telemetry/a-1/rollup"])
async def test_a_window_that_ends_before_it_starts_is_refused_naming_start(
    running, site_yaml, path
) -> None:
    await running.import_site(site_yaml("site-a", ["a-1"]))
    resp = await running.http.get(
        path, params={"start": "2026-11-27T12:00:00Z", "end": "2026-11-27T11:00:00Z"}
    )
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["field"] == "start"
    assert "start must be before end" in body["detail"]
