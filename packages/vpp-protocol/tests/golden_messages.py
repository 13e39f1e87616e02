"""The messages behind the golden wire vectors in golden/*.bin (fixed values, never random)."""

from __future__ import annotations

import datetime as dt

import vpp_protocol as v

TS = dt.datetime(2026, 11, 27, 12, 30, 15, 250000, tzinfo=dt.UTC)
EXPIRES = dt.datetime(2026, 11, 27, 12, 35, 15, tzinfo=dt.UTC)
ENDS = dt.datetime(2026, 11, 27, 13, 0, 0, tzinfo=dt.UTC)

GOLDEN: dict[str, v.AgentMessage | v.HeadendMessage] = {
    "register": v.AgentMessage(
        register=v.Register(
            site_id="site-a",
            assets=[
                v.AssetDescriptor(
                    asset_id="site-a-bess-1",
                    kind=v.AssetKind.BESS,
                    capacity_kw=250.0,
                    min_kw=-250.0,
                    max_kw=250.0,
                    energy_kwh=500.0,
                ),
                v.AssetDescriptor(asset_id="site-a-pv-1", kind=v.AssetKind.PV, capacity_kw=100.0),
            ],
            agent_version="vpp-gateway 0.1.0",
            protocol_version=1,
        )
    ),
    "telemetry_batch": v.AgentMessage(
        telemetry_batch=v.TelemetryBatch(
            readings=[
                v.Telemetry(
                    asset_id="site-a-bess-1",
                    seq=42,
                    ts=TS,
                    power_kw=-120.5,
                    soc_pct=61.25,
                    status=v.AssetStatus.OK,
                    setpoint_kw=-120.0,
                    setpoint_id="7f1c2d9e-0000-4000-8000-000000000001",
                ),
                v.Telemetry(
                    asset_id="site-a-pv-1",
                    seq=43,
                    ts=TS,
                    power_kw=0.0,
                    status=v.AssetStatus.STANDBY,
                ),
            ]
        )
    ),
    "legacy_telemetry": v.AgentMessage(
        telemetry=v.Telemetry(seq=1, ts=TS, power_kw=3.75, status=v.AssetStatus.OK)
    ),
    "setpoint_site": v.HeadendMessage(
        setpoint=v.Setpoint(
            setpoint_id="7f1c2d9e-0000-4000-8000-000000000002",
            site_id="site-a",
            power_kw=-300.0,
            issued_at=TS,
            expires_at=EXPIRES,
        )
    ),
    "ack_allocations": v.AgentMessage(
        setpoint_ack=v.SetpointAck(
            setpoint_id="7f1c2d9e-0000-4000-8000-000000000002",
            state=v.AckState.APPLIED,
            ts=TS,
            allocations=[
                v.Allocation(asset_id="site-a-bess-1", power_kw=-250.0),
                v.Allocation(asset_id="site-a-bess-2", power_kw=-50.0),
            ],
        )
    ),
    "register_result": v.HeadendMessage(
        register_result=v.RegisterResult(
            accepted_asset_ids=["site-a-bess-1"],
            rejected=[
                v.RejectedAsset(
                    asset_id="site-b-pv-1",
                    code=v.RejectCode.FOREIGN_ASSET,
                    reason="registered to site site-b",
                )
            ],
            session_id="3b0e6c1a-0000-4000-8000-000000000003",
            epoch=7,
            telemetry_watermarks={"site-a-bess-1": 41},
            protocol_version=1,
            heartbeat_interval_s=15.0,
        )
    ),
    "session_closed": v.HeadendMessage(
        session_closed=v.SessionClosed(
            reason=v.CloseReason.SUPERSEDED, detail="newer session epoch 8"
        )
    ),
    # Round 2 (issues 15 and 16): live envelopes, time in force, release, delivery.
    "telemetry_envelope": v.AgentMessage(
        telemetry_batch=v.TelemetryBatch(
            readings=[
                v.Telemetry(
                    asset_id="site-a-genset-1",
                    seq=44,
                    ts=TS,
                    power_kw=80.0,
                    status=v.AssetStatus.OK,
                    setpoint_kw=80.0,
                    setpoint_id="7f1c2d9e-0000-4000-8000-000000000004",
                    available_min_kw=0.0,
                    available_max_kw=200.0,
                    min_stable_kw=60.0,
                    setpoint_ends_at=ENDS,
                ),
                v.Telemetry(
                    asset_id="site-a-pv-1",
                    seq=45,
                    ts=TS,
                    power_kw=0.0,
                    status=v.AssetStatus.STANDBY,
                    available_min_kw=0.0,
                    available_max_kw=0.0,
                ),
            ]
        )
    ),
    "setpoint_duration": v.HeadendMessage(
        setpoint=v.Setpoint(
            setpoint_id="7f1c2d9e-0000-4000-8000-000000000004",
            asset_id="site-a-genset-1",
            power_kw=80.0,
            issued_at=TS,
            expires_at=EXPIRES,
            duration_s=900.0,
        )
    ),
    "setpoint_ends_at": v.HeadendMessage(
        setpoint=v.Setpoint(
            setpoint_id="7f1c2d9e-0000-4000-8000-000000000005",
            group_id="vpp-north",
            power_kw=-150.0,
            issued_at=TS,
            expires_at=EXPIRES,
            ends_at=ENDS,
        )
    ),
    "release": v.HeadendMessage(
        release=v.Release(
            setpoint_id="7f1c2d9e-0000-4000-8000-000000000005",
            reason="cancelled by operator",
            issued_at=TS,
        )
    ),
    "ack_shortfall": v.AgentMessage(
        setpoint_ack=v.SetpointAck(
            setpoint_id="7f1c2d9e-0000-4000-8000-000000000002",
            state=v.AckState.APPLIED,
            ts=TS,
            allocations=[
                v.Allocation(asset_id="site-a-bess-1", power_kw=-250.0, applied_kw=-250.0),
                v.Allocation(
                    asset_id="site-a-bess-2",
                    power_kw=-50.0,
                    applied_kw=-20.0,
                    limit_reason=v.LimitReason.STATE_OF_CHARGE,
                    limit_detail="soc 94 % near full",
                ),
            ],
            requested_kw=-300.0,
            shortfall_kw=-30.0,
            ends_at=ENDS,
        )
    ),
    "ack_released": v.AgentMessage(
        setpoint_ack=v.SetpointAck(
            setpoint_id="7f1c2d9e-0000-4000-8000-000000000005",
            state=v.AckState.RELEASED,
            reason="cancelled by operator",
            ts=TS,
            allocations=[v.Allocation(asset_id="site-a-bess-1", power_kw=0.0)],
            release_cause=v.ReleaseCause.CANCELLED,
        )
    ),
}


def write_vectors() -> None:  # pragma: no cover - run by hand, once, when adding a vector
    from pathlib import Path

    out = Path(__file__).parent / "golden"
    out.mkdir(exist_ok=True)
    for name, message in GOLDEN.items():
        path = out / f"{name}.bin"
        if not path.exists():  # never rewrite an existing vector: that would hide a wire change
            path.write_bytes(bytes(message))


if __name__ == "__main__":  # pragma: no cover
    write_vectors()
