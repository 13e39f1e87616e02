"""Smoke test of the load harness (tools/loadgen): a tiny run end to end.

Real headend processes, real gateways' worth of gRPC connections in client processes,
a real PostgreSQL. The full-size runs are `nox -s loadgen` and `nox -s bench`.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = str(Path(__file__).resolve().parents[2] / "tools")


def _loadgen() -> ModuleType:
    # A plain import from tools/ (on sys.path, which spawned client processes inherit),
    # so multiprocessing can find the client function by module name.
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    return importlib.import_module("loadgen")


# The raw HTTP/2 client (the default) on one and two replicas; grpclib's, the reference,
# on one, so a change to the shared gateway logic is checked on both clients; and REST on
# a replica of its own (every dispatch crosses replicas through LISTEN/NOTIFY).
@pytest.mark.parametrize(
    ("replicas", "client", "control"),
    [(1, "raw", False), (2, "raw", False), (1, "grpclib", False), (1, "raw", True)],
)
def test_loadgen_smoke(pg_server_url: str, replicas: int, client: str, control: bool) -> None:
    lg = _loadgen()
    cfg = lg.LoadConfig(
        gateways=5,
        assets=3,
        cadence_s=0.5,
        duration_s=3.0,
        dispatch_rate=3.0,
        replicas=replicas,
        connect_timeout_s=30.0,
        client=client,
        control_replica=control,
    )
    report = lg.run(cfg, pg_server_url)
    assert report.config["client"] == client
    assert report.connected == 5
    assert report.errors == {}
    # 5 x 3 readings every 0.5 s, about 90 in the window (phases make it +-15).
    assert report.rows_stored >= 60
    assert report.lag_samples > 0
    assert report.lag_p99_s is not None
    assert report.lag_p99_s < 2.0
    assert report.dispatches_applied == report.dispatches > 0
    # The headend's own clock sees each applied dispatch, no slower than the REST view.
    assert report.server_applied_p50_ms is not None
    assert report.dispatch_p50_ms is not None
    assert 0 < report.server_applied_p50_ms <= report.dispatch_p50_ms
    assert len(report.headend_cpu_pct) == replicas + control
    assert all(cpu > 0 for cpu in report.headend_cpu_pct)
    assert "stored readings/s" in report.table()
