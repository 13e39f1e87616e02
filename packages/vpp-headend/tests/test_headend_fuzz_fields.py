"""Field-level fuzzing of one real headend (issue 14): random values in every field of
every AgentMessage body, in POST /dispatch bodies and in the GET paths and queries.

After each example: no gRPC INTERNAL/UNKNOWN and every refusal has a message, no HTTP
5xx and every error is a JSON problem, no ERROR log, no invalid row stored, /health
answers, and a well-behaved canary site's stream stays open and its new reading is stored.

Hypothesis runs derandomized (a failure replays as is); examples per test:
``VPP_FUZZ_EXAMPLES`` (default 40 gRPC conversations, 4x as many REST requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from google.protobuf import text_format
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from headend_http import app_client
from headend_waits import eventually
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from vpp_headend import Headend, Settings, create_app
from vpp_protocol.sitefile import parse_site_file
from vpp_protocol.upb import pb

# Hypothesis warns (an error here) before printing a 30 kB example; ours are shortened.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
EXAMPLES = int(os.environ.get("VPP_FUZZ_EXAMPLES", "40"))
CONNECT = "/vpp.agent.v1.AgentService/Connect"
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # "explain" reruns ~150 times
)
# Stand-ins for ids known only once the headend runs (substituted before sending).
DISPATCH_F, DISPATCH_SITE_F, DISPATCH_C = "<dispatch f-1>", "<dispatch site-f>", "<dispatch c-1>"

# -- strategies -----------------------------------------------------------------------


def mostly(usual: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` about three times in four, else ``wild``: most frames get past validation
    and the odd field is what is tested. Shrinks towards ``usual``. (A branch repeated
    inside `st.one_of` does not weigh it: nested one_ofs are flattened.)"""
    return st.integers(0, 3).flatmap(lambda i: wild if i == 3 else usual)


_SPECIAL_TEXT = ["", "\x00", "a\x00b", "\n", "\r\n", "\u2028", "\u2029", "\t", "\x1b[2J", "\x7f",
                 "\ufeff", "💥", "%00", "%0a", "../..", "'; DROP TABLE telemetry; --"]  # fmt: skip
texts = st.one_of(
    st.sampled_from(_SPECIAL_TEXT),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),  # no lone surrogates
    st.builds(
        lambda ch, n: ch * n,
        st.sampled_from(["a", "\x00", "é", "\n", "\u2028"]),
        st.sampled_from([65, 201, 257, 501, 4097, 70_000]),
    ),
)
asset_ids = st.one_of(st.sampled_from(["f-1", "f-2", "", "c-1", "ghost-1"]), texts)
our_assets = mostly(st.sampled_from(["f-1", "f-2"]), asset_ids)
floats = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, -0.0, 5e-324, 1e7, 1e7 + 2]),
    st.floats(),
)
kw = mostly(st.floats(-1e4, 1e4), floats)
u64 = st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
enums = st.one_of(st.integers(0, 7), st.sampled_from([-1, 99, 2**31 - 1, -(2**31)]))
_TS_EDGES = [0, -1, 946684799, 946684800, 7258118399, 7258118400, 253402300800, 2**63 - 1, -(2**63)]
_near_now = st.builds(lambda d: int(time.time()) + d, st.integers(-86_400, 86_400))
seconds = st.one_of(_near_now, st.sampled_from(_TS_EDGES), st.integers(-(2**63), 2**63 - 1))
nanos = st.one_of(st.just(0), st.sampled_from([999_999_999, 10**9, -1, 2**31 - 1, -(2**31)]))
stamps = mostly(st.tuples(_near_now, st.integers(0, 999_999_999)), st.tuples(seconds, nanos))
uuids_or_text = mostly(st.uuids().map(str), st.one_of(st.just(""), texts))


@st.composite
def registers(draw: st.DrawFn, *, plausible: bool = False) -> pb.AgentMessage:
    """A random Register; ``plausible``: site-f claiming f-1 and f-2, fields fuzzed."""
    m = pb.AgentMessage()
    r = m.register
    r.site_id = "site-f" if plausible else draw(st.one_of(st.just("site-f"), texts))
    if plausible:
        for a in ("f-1", "f-2"):
            r.assets.add(asset_id=a, kind=pb.ASSET_KIND_BESS, capacity_kw=100.0)
    for _ in range(draw(st.integers(0, 3))):
        a = r.assets.add(asset_id=draw(asset_ids), kind=draw(enums))
        for name in ("capacity_kw", "min_kw", "max_kw", "energy_kwh"):
            if draw(st.booleans()):
                setattr(a, name, draw(floats))
        a.credential = draw(mostly(st.just(""), texts))
    r.agent_version = draw(mostly(st.just("vpp-gateway 0.1.0"), texts) if plausible else texts)
    r.protocol_version = draw(mostly(st.just(1), st.integers(0, 2**32 - 1)))
    r.asset_id = draw(mostly(st.just(""), asset_ids))
    return m


@st.composite
def readings(draw: st.DrawFn) -> pb.Telemetry:
    t = pb.Telemetry(
        asset_id=draw(our_assets),
        seq=draw(mostly(st.integers(1, 10**6), u64)),
        power_kw=draw(kw),
        status=draw(mostly(st.integers(0, 4), enums)),
        setpoint_id=draw(uuids_or_text),
    )
    t.ts.seconds, t.ts.nanos = draw(stamps)
    if draw(st.booleans()):
        t.soc_pct = draw(mostly(st.floats(0, 100), floats))
    if draw(st.booleans()):
        t.setpoint_kw = draw(kw)
    return t


@st.composite
def acks(draw: st.DrawFn) -> pb.SetpointAck:
    real = st.sampled_from([DISPATCH_F, DISPATCH_SITE_F, DISPATCH_C])
    a = pb.SetpointAck(
        setpoint_id=draw(mostly(real, uuids_or_text)),
        asset_id=draw(mostly(st.sampled_from(["", "f-1", "f-2"]), asset_ids)),
        state=draw(mostly(st.integers(1, 5), enums)),
        reason=draw(mostly(st.just(""), texts)),
        clamped=draw(st.booleans()),
    )
    if draw(st.booleans()):
        a.ts.seconds, a.ts.nanos = draw(stamps)
    if draw(st.booleans()):
        a.applied_kw = draw(kw)
    for _ in range(draw(st.integers(0, 3))):
        a.allocations.add(asset_id=draw(our_assets), power_kw=draw(kw))
    return a


@st.composite
def heartbeats(draw: st.DrawFn) -> pb.Heartbeat:
    h = pb.Heartbeat(seq=draw(u64))
    if draw(st.booleans()):
        h.ts.seconds, h.ts.nanos = draw(stamps)
    return h


def _body(kind: str) -> Callable[[Any], pb.AgentMessage]:
    def wrap(value: Any) -> pb.AgentMessage:
        m = pb.AgentMessage()
        if kind == "telemetry_batch":
            m.telemetry_batch.readings.extend(value)
        else:
            getattr(m, kind).CopyFrom(value)
        return m

    return wrap


bodies = mostly(
    st.one_of(
        readings().map(_body("telemetry")),
        st.lists(readings(), max_size=6).map(_body("telemetry_batch")),
        acks().map(_body("setpoint_ack")),
        heartbeats().map(_body("heartbeat")),
    ),
    # these end the session (a protocol error), so they come less often
    st.one_of(registers(), st.just(pb.AgentMessage())),
)


def _short(shown: str) -> str:
    """A repr with long runs of one character (or escape) written as ``c×n``."""
    return re.sub(r"(\\\d{3}|\\.|.)\1{15,}", lambda m: f"{m[1]}×{len(m[0]) // len(m[1])}", shown)


@dataclass(frozen=True)
class Conversation:
    frames: tuple[pb.AgentMessage, ...]
    timeout: float | None  # the grpc-timeout the client sends

    def __repr__(self) -> str:
        shown = [_short(text_format.MessageToString(f, as_one_line=True)) for f in self.frames]
        return f"Conversation(timeout={self.timeout}, frames=[{'; '.join(shown)}])"


@st.composite
def conversations(draw: st.DrawFn) -> Conversation:
    # Mostly a Register the headend accepts, so the later frames reach the session.
    first = draw(mostly(registers(plausible=True), st.one_of(registers(), bodies)))
    timeout = draw(mostly(st.none(), st.sampled_from([0.05, 0.5, 3.0])))
    return Conversation((first, *draw(st.lists(bodies, max_size=6))), timeout)


# fmt: off
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), floats, texts,
                       st.sampled_from([10**400, -(10**400), 2**64]))
json_values = st.recursive(
    _json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(texts, c, max_size=3),
    max_leaves=8,
)
_DATES = ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "10000-01-01T00:00:00Z",
          "2026-02-30T00:00:00Z", "2030-01-01T00:00:00", "2030-01-01T00:00:00+24:00",
          "-0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "NaN", ""]
_CONTENT_TYPES = [*["application/json"] * 6, "APPLICATION/JSON",
                  'application/json; charset="UTF-8"', "application/json-seq", "text/plain",
                  "application/x-www-form-urlencoded",
                  "multipart/form-data", "application/json; charset=latin-1", "", "*/*"]
_ODD_BODIES = [b"", b"{", b'{"power_kw": NaN, "asset_id": "f-1"}', b"\xff\xfe{}",
               b'{"power_kw": 1e999, "asset_id": "f-1"}',
               b'{"power_kw": 1, "asset_id": "f-1", "asset_id": "c-1"}']
_RAW_ESCAPES = ["%00", "%0a", "%0d%0a", "%e2%80%a8", "%ff", "%zz", "%", "..%2f..", "%2e%2e"]
_PATHS = ["/telemetry/{}", "/telemetry/{}/history", "/telemetry/{}/rollup", "/assets/{}",
          "/sites/{}", "/sites/{}/telemetry", "/dispatch/{}", "/dispatch/{}/cancel",
          "/dispatches", "/assets", "/sites", "/gateways"]
_QUERY_KEYS = ["start", "end", "limit", "asset_id", "site_id", "state", "cursor"]
# fmt: on
datetimes_text = st.one_of(
    st.sampled_from(_DATES),
    st.builds(
        lambda d: (datetime.now(UTC) + timedelta(seconds=d)).isoformat(),
        st.integers(-(10**9), 10**9),
    ),
)
_target = st.one_of(st.sampled_from(["f-1", "c-1", "site-f", "g-1", "ghost"]), json_values)
_number = st.one_of(
    st.floats(-1e3, 1e3), floats, st.sampled_from(["NaN", "Infinity", "1e3", "", True]), json_values
)
_when = st.one_of(datetimes_text, json_values)
_extras = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(["asset_id", "site_id", "group_id"], _target),
        **dict.fromkeys(["power_kw", "ttl_s", "duration_s"], _number),
        **dict.fromkeys(["expires_at", "ends_at"], _when),
        "colour": json_values,
    },
)


@st.composite
def dispatch_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly one target and a power (so some are accepted), then random extra fields."""
    obj = {draw(st.sampled_from(["asset_id", "site_id", "group_id"])): draw(_target)}
    obj["power_kw"] = draw(_number)
    return obj | draw(_extras)


def _json(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN and Infinity as many clients write


dispatch_bodies = mostly(
    dispatch_objects().map(_json),
    st.one_of(json_values.map(_json), st.binary(max_size=40), st.sampled_from(_ODD_BODIES)),
)
_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
_path_ids = st.one_of(
    st.sampled_from(["f-1", "c-1", "site-f", "site-c", "g-1", DISPATCH_F]),
    texts.map(lambda s: quote(s, safe="")),
    st.sampled_from(_RAW_ESCAPES),
)
_query = st.dictionaries(
    st.sampled_from(_QUERY_KEYS),
    st.one_of(datetimes_text, texts, st.integers().map(str), st.sampled_from(["1e3", "NaN"])),
    max_size=3,
)


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return _short(f"Req({self.method} {self.path!r}, body={self.body!r}, {self.headers})")


@st.composite
def requests(draw: st.DrawFn) -> Req:
    if draw(st.booleans()):
        headers = {"content-type": draw(st.sampled_from(_CONTENT_TYPES))}
        if draw(st.booleans()):
            headers["Idempotency-Key"] = draw(_header_text)
        return Req("POST", "/dispatch", draw(dispatch_bodies), headers)
    path = draw(st.sampled_from(_PATHS)).format(draw(_path_ids))
    query = urlencode(draw(_query), quote_via=quote)
    assume(len(path) + len(query) < 60_000)  # the client itself refuses a longer URL
    return Req(
        draw(st.sampled_from(["GET", "GET", "GET", "POST"])), f"{path}?{query}" if query else path
    )


# -- the conversation and the checks -----------------------------------------------------


@dataclass
class Outcome:
    replies: list[pb.HeadendMessage] = field(default_factory=list)
    status: Status = Status.OK
    message: str = ""
    client_deadline: bool = False


async def converse(port: int, frames: list[pb.AgentMessage], timeout: float | None) -> Outcome:
    """One stream: send ``frames`` and end, while reading every reply and the status."""
    out = Outcome()
    channel = Channel("127.0.0.1", port)

    async def send_all(stream: Any) -> None:
        with contextlib.suppress(StreamTerminatedError, GRPCError, ConnectionError):
            for i, f in enumerate(frames):
                await stream.send_message(f, end=i == len(frames) - 1)

    try:
        async with asyncio.timeout(15) as guard:
            request = channel.request(
                CONNECT,
                Cardinality.STREAM_STREAM,
                pb.AgentMessage,
                pb.HeadendMessage,
                timeout=timeout,
            )
            async with request as stream:
                await stream.send_request()
                sender = asyncio.create_task(send_all(stream))
                try:
                    while (reply := await stream.recv_message()) is not None:
                        out.replies.append(reply)
                    await stream.recv_trailing_metadata()
                finally:
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
    except GRPCError as exc:
        out.status, out.message = exc.status, exc.message or ""
    except TimeoutError:
        assert not guard.expired(), f"the stream hung (15 s): {out}"
        out.client_deadline = True  # our grpc-timeout passed before the headend answered
    finally:
        channel.close()
    return out


class Stage:
    """The headend under test with its fleet and the canary, shared by all examples.

    site-f is fuzzed; site-c is the canary, a well-behaved gateway. After an example that
    failed, the next one (each shrink of a failure too) first checks that the canary's
    readings are still stored, and replaces the headend (same database) if not: a
    failure stays pinned on the example that caused it.
    """

    def __init__(
        self, settings: Settings, agents: Callable[..., Awaitable[Any]], site_yaml: Any
    ) -> None:
        self._settings, self._agents, self._site_yaml = settings, agents, site_yaml
        self._stack: contextlib.AsyncExitStack | None = None
        self.headend: Any = None  # a started Headend once `ready` ran
        self.http: Any = None
        self.ids: dict[str, str] = {}  # DISPATCH_* stand-in -> a real dispatch id
        self.canary: Any = None
        self.seq = 0
        self.passed = False

    async def ready(self) -> None:
        if self._stack is not None and not self.passed and not await self._works():
            await self.close()
        if self._stack is None:
            await self._start()
        await self._open_canary()
        self.passed = False

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            # A headend an example broke may fail to stop too; that example already failed.
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def _start(self) -> None:
        self._stack = stack = contextlib.AsyncExitStack()
        self.headend = await stack.enter_async_context(Headend.open(self._settings))
        app = create_app(self._settings, self.headend)
        self.http = await stack.enter_async_context(app_client(app))
        for site, assets, groups in (("site-f", ["f-1", "f-2"], ["g-1"]), ("site-c", ["c-1"], [])):
            yaml = self._site_yaml(site, assets, groups=groups)
            await self.headend.registry.import_site(parse_site_file(yaml))
        f = await self._dispatch(asset_id="f-1", power_kw=5.0)  # pending: site-f is offline
        site_f = await self._dispatch(site_id="site-f", power_kw=8.0)
        await self._open_canary()
        c = await self._dispatch(asset_id="c-1", power_kw=2.0)
        await self.canary.setpoint()
        self.ids = {DISPATCH_F: f, DISPATCH_SITE_F: site_f, DISPATCH_C: c}

    async def _dispatch(self, **body: Any) -> str:
        resp = await self.http.post("/dispatch", json=body)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["dispatch_id"])

    async def _open_canary(self) -> None:
        a = self.canary
        if a is None or a.ended.is_set() or a.port != self.headend.grpc_port:
            a = self.canary = await self._agents(self.headend.grpc_port, "site-c")
            result = await a.register(["c-1"])
            assert result.accepted_asset_ids == ["c-1"], result
            self.seq = max(self.seq, result.telemetry_watermarks.get("c-1", 0))

    async def _works(self) -> bool:
        try:
            await self._open_canary()
            await self.still_served("the example before")
        except Exception:  # any failure means: start afresh
            return False
        return True

    async def still_served(self, example: object) -> None:
        """The canary's stream is open and its next reading gets stored."""
        a = self.canary
        assert not a.ended.is_set(), f"the canary's stream ended ({a.error!r}) after {example}"
        self.seq += 1
        a.send(telemetry=a.telemetry("c-1", 3.0, seq=self.seq))
        stored: Any = None

        async def landed() -> bool:
            nonlocal stored
            stored = await self.scalar(_CANARY_SEQ)
            return bool(stored == self.seq)

        await eventually(
            landed,
            5.0,
            lambda: (
                f"the canary's reading {self.seq} was not stored (have {stored}) after {example}"
            ),
        )

    async def scalar(self, sql: str) -> Any:
        async with self.headend.engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()

    async def no_invalid_rows(self, example: object) -> None:
        async with self.headend.engine.begin() as conn:
            bad = (await conn.execute(text(_TAKE_BAD_ROWS))).all()
        assert not bad, f"invalid rows stored after {example}: {bad[:5]}"

    async def healthy(self) -> None:
        resp = await self.http.get("/health")
        assert resp.status_code == 200, resp.text


_CANARY_SEQ = "SELECT max(seq) FROM telemetry WHERE asset_id = 'c-1'"
# PostgreSQL refuses NUL in text outright, so a NUL that slipped through shows up as a
# failed write (an ERROR log, a lost canary reading), not as a row.
_BAD = (
    "seq <= 0 OR NOT abs(power_kw) <= 1e7 OR NOT abs(coalesce(soc_pct, 0)) <= 101 "
    "OR NOT abs(coalesce(setpoint_kw, 0)) <= 1e7 OR length(setpoint_id) > 64 "
    "OR ts < '2000-01-01Z' OR ts >= '2200-01-01Z'"
)
_COLS = "asset_id, seq, ts::text, power_kw, soc_pct"
# Deleted as they are found, so the next example (or shrink) starts clean.
_TAKE_BAD_ROWS = f"""
    WITH t AS (DELETE FROM telemetry WHERE {_BAD} RETURNING 'telemetry', {_COLS}),
    l AS (DELETE FROM telemetry_latest WHERE {_BAD} RETURNING 'telemetry_latest', {_COLS}),
    d AS (DELETE FROM dispatch_targets
          WHERE NOT abs(coalesce(applied_kw, 0)) <= 1e7
             OR NOT abs(coalesce(allocation_kw, 0)) <= 1e7
          RETURNING 'dispatch_targets', asset_id, 0::bigint, '', applied_kw, allocation_kw)
    SELECT * FROM t UNION ALL SELECT * FROM l UNION ALL SELECT * FROM d"""


def _no_errors_logged(caplog: pytest.LogCaptureFixture, since: int, example: object) -> None:
    errors = [r for r in caplog.records[since:] if r.levelno >= logging.ERROR]
    assert not errors, f"ERROR logged after {example}: " + "\n".join(
        f"{r.name}: {r.getMessage()[:300]} exc={r.exc_info and r.exc_info[1]!r}" for r in errors
    )


@pytest.fixture
async def stage(
    settings: Settings, agents: Callable[..., Awaitable[Any]], site_yaml: Any
) -> AsyncIterator[Stage]:
    stage = Stage(settings, agents, site_yaml)  # one for all examples of a test
    yield stage
    await stage.close()


def _with_real_ids(frame: pb.AgentMessage, ids: dict[str, str]) -> pb.AgentMessage:
    if frame.WhichOneof("body") == "setpoint_ack" and frame.setpoint_ack.setpoint_id in ids:
        frame = pb.AgentMessage.FromString(frame.SerializeToString())
        frame.setpoint_ack.setpoint_id = ids[frame.setpoint_ack.setpoint_id]
    return frame


# -- the tests ---------------------------------------------------------------------------


@FUZZ
@given(conversation=conversations())
async def test_random_agent_fields_never_break_the_headend(
    stage: Stage, caplog: pytest.LogCaptureFixture, conversation: Conversation
) -> None:
    await stage.ready()
    since = len(caplog.records)
    frames = [_with_real_ids(f, stage.ids) for f in conversation.frames]
    out = await converse(stage.headend.grpc_port, frames, conversation.timeout)
    kinds = sorted({r.WhichOneof("body") for r in out.replies})
    event("client deadline" if out.client_deadline else f"{out.status.name}, replies {kinds}")
    assert out.status not in (Status.INTERNAL, Status.UNKNOWN), out
    assert out.status is Status.OK or out.message, f"status {out.status.name} without a message"
    assert not out.client_deadline or conversation.timeout is not None, out
    for reply in out.replies:
        if reply.WhichOneof("body") == "session_closed":
            assert reply.session_closed.detail, f"SessionClosed without a detail: {out}"
    for path in ("/telemetry/f-1", "/telemetry/f-1/history", f"/dispatch/{stage.ids[DISPATCH_F]}"):
        resp = await stage.http.get(path)
        assert resp.status_code < 500, f"GET {path} after the conversation: {resp.text[:300]}"
    await stage.healthy()
    await stage.still_served(out)
    await stage.no_invalid_rows(out)
    _no_errors_logged(caplog, since, out)
    stage.passed = True


@settings(FUZZ, max_examples=EXAMPLES * 4)
@given(req=requests())
async def test_random_rest_requests_get_json_problems_and_store_nothing(
    stage: Stage, caplog: pytest.LogCaptureFixture, req: Req
) -> None:
    await stage.ready()
    since = len(caplog.records)
    before = await stage.scalar("SELECT count(*) FROM dispatches")
    path = req.path.replace(DISPATCH_F, stage.ids[DISPATCH_F])
    resp = await stage.http.request(req.method, path, content=req.body, headers=req.headers)
    event(f"{req.method} {resp.status_code}")
    assert resp.status_code < 500, f"{req}: {resp.status_code} {resp.text[:500]}"
    if resp.status_code >= 400:
        try:
            problem = resp.json()
        except ValueError:
            raise AssertionError(f"{req}: error body is not JSON: {resp.text[:300]!r}") from None
        assert isinstance(problem, dict), problem
        assert problem.get("status") == resp.status_code, f"{req}: {problem}"
        assert problem.get("detail"), f"{req}: problem without a detail: {problem}"
    created = req.path == "/dispatch" and resp.status_code == 202
    after = await stage.scalar("SELECT count(*) FROM dispatches")
    assert after == before or created, f"{req} answered {resp.status_code} but stored a dispatch"
    await stage.healthy()
    assert not stage.canary.ended.is_set(), f"the canary's stream ended after {req}"
    _no_errors_logged(caplog, since, req)
    stage.passed = True
