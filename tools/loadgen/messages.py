"""The simulated fleet's names and pre-encoded upb messages: site and asset ids, the
Register message, TelemetryBatch frames."""

from __future__ import annotations

import time

from vpp_protocol import PROTOCOL_VERSION
from vpp_protocol.upb import pb


def site_id(g: int) -> str:
    return f"lg{g}"


def asset_id(g: int, a: int) -> str:
    return f"lg{g}-a{a}"


def register_frame(g: int, assets: int) -> bytes:
    """Gateway ``g``'s Register message: site lg<g> with ``assets`` BESS assets of 100 kW."""
    msg = pb.AgentMessage()
    msg.register.site_id = site_id(g)
    msg.register.protocol_version = PROTOCOL_VERSION
    msg.register.agent_version = "vpp-loadgen"
    for a in range(assets):
        d = msg.register.assets.add()
        d.asset_id = asset_id(g, a)
        d.kind = pb.ASSET_KIND_BESS
        d.capacity_kw = 100.0
    return bytes(msg.SerializeToString())


def batch_frames(asset_ids: list[str], readings: int, batch: int) -> list[bytes]:
    """upb-encoded TelemetryBatch frames: ``readings`` in all, seq 1.. per asset, round robin
    over ``asset_ids`` (power 10 kW + the asset's index), ``batch`` readings per frame."""
    base = int(time.time()) - readings
    msg = pb.AgentMessage()
    frames: list[bytes] = []
    seq = sent = 0
    while sent < readings:
        msg.Clear()
        out = msg.telemetry_batch.readings
        while len(out) < batch and sent < readings:
            seq += 1
            for a, aid in enumerate(asset_ids):
                if len(out) >= batch or sent >= readings:
                    break
                r = out.add()
                r.asset_id = aid
                r.seq = seq
                r.ts.seconds = base + seq
                r.power_kw = 10.0 + a
                r.soc_pct = 50.0
                r.status = pb.ASSET_STATUS_OK
                sent += 1
        frames.append(msg.SerializeToString())
    return frames
