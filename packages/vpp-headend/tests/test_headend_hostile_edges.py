"""Hostile edges no input may cross (issue 14): control characters in a Register, log
lines forged through a request path or a field, and a malformed or spent ``grpc-timeout``.
Everything against a real headend: PostgreSQL, the gRPC server on loopback, the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)

import vpp_protocol as vp
from vpp_headend.grpc_service import CONNECT_PATH
from vpp_headend.logs import configure_logging, log_event

_RECORD_START = re.compile(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=\w+ logger=\S+ event=")


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info is not None]


def _session_rows(db_url: str, site_id: str) -> list[Any]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT site_id, assets_served, agent_version FROM gateway_sessions WHERE site_id = %s",
            (site_id,),
        ).fetchall()


def _register(agent: Any, site_id: str, assets: list[vp.AssetDescriptor], version: str) -> None:
    agent.send(
        register=vp.Register(
            site_id=site_id,
            assets=assets,
            agent_version=version,
            protocol_version=vp.PROTOCOL_VERSION,
            asset_id="",
        )
    )


def _asset(asset_id: str, credential: str = "") -> vp.AssetDescriptor:
    return vp.AssetDescriptor(
        asset_id=asset_id, kind=vp.AssetKind.BESS, capacity_kw=100.0, credential=credential
    )


# -- Register fields -------------------------------------------------------------------------


async def test_nul_in_site_id_refuses_the_stream_cleanly(
    running: Any, agents: Any, site_yaml: Any, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a\x00x")
    _register(agent, "site-a\x00x", [_asset("a-1")], "v1")

    assert await agent.closed_reason() == vp.CloseReason.PROTOCOL_ERROR
    await agent.wait_ended()
    assert isinstance(agent.error, GRPCError)
    assert agent.error.status == Status.INVALID_ARGUMENT
    assert "Register.site_id" in str(agent.error.message)
    assert "control characters" in str(agent.error.message)
    assert _tracebacks(caplog) == []
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM gateway_sessions").fetchone() == (0,)


async def test_a_bad_asset_claim_is_rejected_alone(
    running: Any,
    agents: Any,
    site_yaml: Any,
    db_url: str,
    eventually: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    await running.import_site(site_yaml("site-a", ["a-1", "a-2", "a-3"]))
    agent = await agents(running.grpc_port, "site-a")
    claims = [_asset("a-1"), _asset("a-2\x00"), _asset("a-3", credential="tok\x00en")]
    _register(agent, "site-a", claims, "gw 1.0\x00\r\nevent=forged")

    msg = await agent.recv("register_result")
    result = msg.register_result
    assert result is not None
    assert result.accepted_asset_ids == ["a-1"]
    rejected = {r.asset_id: r for r in result.rejected}
    assert set(rejected) == {"a-2\x00", "a-3"}
    assert {r.code for r in rejected.values()} == {vp.RejectCode.INVALID}
    assert "asset_id" in rejected["a-2\x00"].reason
    assert "credential" in rejected["a-3"].reason

    agent.send(telemetry=agent.telemetry("a-1", 7.5))

    async def stored() -> bool:
        resp = await running.http.get("/telemetry/a-1")
        return bool(resp.status_code == 200 and resp.json()["power_kw"] == 7.5)

    await eventually(stored, 5.0, "telemetry of the accepted asset was not stored")
    [(site, served, version)] = _session_rows(db_url, "site-a")
    assert (site, served) == ("site-a", "a-1")
    assert version.isprintable()
    assert "\\x00" in version  # escaped, so what was sent is still visible
    assert _tracebacks(caplog) == []


# -- log lines cannot be forged -------------------------------------------------------------


@contextlib.contextmanager
def _headend_log() -> Iterator[io.StringIO]:
    """The CLI's real `configure_logging` handler, writing to a buffer for this block."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    buf = io.StringIO()
    configure_logging("INFO", stream=buf)
    try:
        yield buf
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def _assert_unforged(text: str) -> None:
    assert text, "nothing was logged"
    for raw in ("\x00", "\r", "\u2028", "\x85"):
        assert raw not in text
    for line in text.splitlines():
        assert _RECORD_START.match(line), line  # every line is a record, tracebacks too
        assert not line.startswith("event=forged"), line


async def test_a_request_path_cannot_forge_a_log_line(running: Any, db_url: str) -> None:
    # The database is cut off, so the app logs the (hostile) path with its 503.
    name = db_url.rsplit("/", 1)[1]
    admin = db_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        with _headend_log() as buf:
            async with asyncio.timeout(20):
                resp = await running.http.get(
                    "/assets/x%0aevent=forged%00", headers={"Authorization": "Bearer anything"}
                )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert resp.status_code == 503, resp.text
    text = buf.getvalue()
    _assert_unforged(text)
    assert "x\\nevent=forged\\x00" in text  # what was sent stays readable


def test_fields_messages_and_tracebacks_cannot_forge_a_log_line() -> None:
    hostile = "a\r\nevent=forged\x00\x1b[2J\x7f\x85\u2028\u2029\u202e"
    with _headend_log() as buf:
        log_event(logging.getLogger("vpp_headend.test"), "asset_rejected", asset_id=hostile)
        logging.getLogger("uvicorn.error").warning("Invalid request %s", hostile)
        try:
            raise ValueError(hostile)
        except ValueError:
            logging.getLogger("vpp_headend.test").exception("failed on %s", hostile)
    text = buf.getvalue()
    _assert_unforged(text)
    lines = text.splitlines()
    assert len(lines) == 3  # one line per record, the traceback a field of its record
    assert "\\r\\nevent=forged\\x00\\x1b[2J\\x7f\\x85\\u2028\\u2029\\u202e" in lines[0]
    assert ' exc="Traceback (most recent call last):\\n' in lines[2]


# -- grpc-timeout ---------------------------------------------------------------------------


class _RawH2:
    """A bare HTTP/2 client on a real socket: sends headers grpclib's client would not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.writer.write(self.conn.data_to_send())

    @classmethod
    async def open(cls, port: int) -> _RawH2:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(
        self, path: str, timeout: str | None, body: bytes | None = None
    ) -> dict[str, str]:
        """One call; the response headers and trailers merged."""
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if timeout is not None:
            headers.append(("grpc-timeout", timeout))
        self.conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.writer.write(self.conn.data_to_send())
        got: dict[str, str] = {}
        async with asyncio.timeout(5):
            while True:
                data = await self.reader.read(65536)
                assert data, "the server closed the connection"
                for event in self.conn.receive_data(data):
                    if isinstance(event, ResponseReceived | TrailersReceived):
                        if event.stream_id == sid:
                            got.update(dict(event.headers))  # type: ignore[arg-type]
                    elif isinstance(event, DataReceived):
                        self.conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, ConnectionTerminated):
                        raise AssertionError(f"connection terminated: {event}")
                    elif isinstance(event, StreamEnded | StreamReset) and event.stream_id == sid:
                        self.writer.write(self.conn.data_to_send())
                        if "grpc-status" in got:
                            return got
                self.writer.write(self.conn.data_to_send())

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# The connection hook grpc_timeout.py builds on is pinned with the rest of grpclib's
# private names in test_headend_framing.py.


async def test_spent_or_malformed_grpc_timeout_gets_a_status(
    running: Any, agents: Any, site_yaml: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await _RawH2.open(running.grpc_port)
    try:
        spent = await client.call(CONNECT_PATH, "1n")
        assert spent["grpc-status"] == str(Status.DEADLINE_EXCEEDED.value), spent
        malformed = await client.call(CONNECT_PATH, "abc")
        assert malformed["grpc-status"] == str(Status.INVALID_ARGUMENT.value), malformed
        assert "grpc-timeout" in malformed["grpc-message"]
        too_long = await client.call(CONNECT_PATH, "123456789S")
        assert too_long["grpc-status"] == str(Status.INVALID_ARGUMENT.value), too_long
        # The same connection still serves a call with a sane deadline.
        health = await client.call("/grpc.health.v1.Health/Check", "5S", b"\x00" * 5)
        assert health["grpc-status"] == "0", health
    finally:
        await client.close()

    await running.import_site(site_yaml("site-a", ["a-1"]))
    agent = await agents(running.grpc_port, "site-a")
    assert (await agent.register(["a-1"])).accepted_asset_ids == ["a-1"]
    assert _tracebacks(caplog) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
