"""Legacy single-asset rules: no asset_id means the session's default asset."""

from __future__ import annotations

from hypothesis import given
from protocol_strategies import ids

import vpp_protocol as v


def test_telemetry_without_asset_id_decodes_empty_and_maps_to_the_default() -> None:
    wire = bytes(v.AgentMessage(telemetry=v.Telemetry(seq=7, power_kw=3.5)))
    reading = v.decode(v.AgentMessage, wire).telemetry
    assert reading is not None
    assert reading.asset_id == ""
    assert v.telemetry_asset_id(reading, "legacy-pv-1") == "legacy-pv-1"


@given(asset_id=ids.filter(bool), default=ids)
def test_telemetry_with_asset_id_keeps_it(asset_id: str, default: str) -> None:
    assert v.telemetry_asset_id(v.Telemetry(asset_id=asset_id), default) == asset_id


def test_unattributable_telemetry_maps_to_empty() -> None:
    assert v.telemetry_asset_id(v.Telemetry(seq=1), "") == ""


def test_setpoint_without_target_means_the_default_asset() -> None:
    wire = bytes(v.HeadendMessage(setpoint=v.Setpoint(setpoint_id="s1", power_kw=-2.0)))
    setpoint = v.decode(v.HeadendMessage, wire).setpoint
    assert setpoint is not None
    assert v.setpoint_target(setpoint, "only-asset") == v.SetpointTarget("default", "only-asset")


def test_setpoint_targets_are_reported_by_kind() -> None:
    assert v.setpoint_target(v.Setpoint(asset_id="a")) == v.SetpointTarget("asset", "a")
    assert v.setpoint_target(v.Setpoint(site_id="s")) == v.SetpointTarget("site", "s")
    assert v.setpoint_target(v.Setpoint(group_id="g")) == v.SetpointTarget("group", "g")


def test_legacy_register_is_recognised() -> None:
    assert v.is_legacy_register(v.Register(site_id="s", asset_id="a"))
    multi = v.Register(site_id="s", assets=[v.AssetDescriptor(asset_id="a")])
    assert not v.is_legacy_register(multi)
    assert not v.is_legacy_register(v.Register(site_id="s"))
