"""Hypothesis strategies that build every vpp.agent.v1 message (shared by the protocol tests)."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

import vpp_protocol as v

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=0, max_size=64)
text = st.text(max_size=80)
# Round trips compare with ==, so keep NaN out here (it is tested on its own).
floats = st.floats(allow_nan=False, allow_infinity=True, width=64)
opt_floats = st.none() | floats
u64 = st.integers(min_value=0, max_value=2**64 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
timestamps = st.datetimes(
    min_value=dt.datetime(1, 1, 1),
    max_value=dt.datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(dt.UTC),
)
opt_ts = st.none() | timestamps


def _enum(cls: type) -> st.SearchStrategy[object]:
    return st.sampled_from(list(cls))  # type: ignore[call-overload]


asset_descriptors = st.builds(
    v.AssetDescriptor,
    asset_id=ids,
    kind=_enum(v.AssetKind),
    capacity_kw=opt_floats,
    min_kw=opt_floats,
    max_kw=opt_floats,
    energy_kwh=opt_floats,
    min_stable_kw=opt_floats,
    fallback_kw=opt_floats,
)
registers = st.builds(
    v.Register,
    site_id=ids,
    assets=st.lists(asset_descriptors, max_size=5),
    agent_version=text,
    protocol_version=u32,
    asset_id=ids,
)
register_results = st.builds(
    v.RegisterResult,
    accepted_asset_ids=st.lists(ids, max_size=5),
    rejected=st.lists(
        st.builds(v.RejectedAsset, asset_id=ids, code=_enum(v.RejectCode), reason=text), max_size=3
    ),
    session_id=text,
    epoch=u64,
    telemetry_watermarks=st.dictionaries(ids, u64, max_size=5),
    protocol_version=u32,
    default_asset_id=ids,
    heartbeat_interval_s=floats,
)
telemetry = st.builds(
    v.Telemetry,
    asset_id=ids,
    seq=u64,
    ts=opt_ts,
    power_kw=floats,
    soc_pct=opt_floats,
    status=_enum(v.AssetStatus),
    setpoint_kw=opt_floats,
    setpoint_id=text,
    available_min_kw=opt_floats,
    available_max_kw=opt_floats,
    min_stable_kw=opt_floats,
    setpoint_ends_at=opt_ts,
)
batches = st.builds(v.TelemetryBatch, readings=st.lists(telemetry, max_size=5))


@st.composite
def setpoints(draw: st.DrawFn) -> v.Setpoint:
    # Exactly one member of the oneof (or none: legacy), per docs/stack_notes.md.
    target = draw(st.sampled_from(["asset_id", "site_id", "group_id", None]))
    kwargs = {target: draw(ids)} if target else {}
    return v.Setpoint(
        setpoint_id=draw(text),
        power_kw=draw(floats),
        issued_at=draw(opt_ts),
        expires_at=draw(opt_ts),
        ends_at=draw(opt_ts),
        duration_s=draw(opt_floats),
        **kwargs,
    )


releases = st.builds(v.Release, setpoint_id=text, reason=text, issued_at=opt_ts)
allocations = st.builds(
    v.Allocation,
    asset_id=ids,
    power_kw=floats,
    applied_kw=opt_floats,
    limit_reason=_enum(v.LimitReason),
    limit_detail=text,
)


acks = st.builds(
    v.SetpointAck,
    setpoint_id=text,
    asset_id=ids,
    state=_enum(v.AckState),
    reason=text,
    ts=opt_ts,
    applied_kw=opt_floats,
    allocations=st.lists(allocations, max_size=4),
    clamped=st.booleans(),
    requested_kw=opt_floats,
    shortfall_kw=opt_floats,
    limit_reason=_enum(v.LimitReason),
    limit_detail=text,
    release_cause=_enum(v.ReleaseCause),
    ends_at=opt_ts,
)
heartbeats = st.builds(v.Heartbeat, ts=opt_ts, seq=u64)
closes = st.builds(v.SessionClosed, reason=_enum(v.CloseReason), detail=text)

agent_messages = st.one_of(
    registers.map(lambda m: v.AgentMessage(register=m)),
    telemetry.map(lambda m: v.AgentMessage(telemetry=m)),
    batches.map(lambda m: v.AgentMessage(telemetry_batch=m)),
    acks.map(lambda m: v.AgentMessage(setpoint_ack=m)),
    heartbeats.map(lambda m: v.AgentMessage(heartbeat=m)),
)
headend_messages = st.one_of(
    register_results.map(lambda m: v.HeadendMessage(register_result=m)),
    setpoints().map(lambda m: v.HeadendMessage(setpoint=m)),
    heartbeats.map(lambda m: v.HeadendMessage(heartbeat=m)),
    closes.map(lambda m: v.HeadendMessage(session_closed=m)),
    releases.map(lambda m: v.HeadendMessage(release=m)),
)
