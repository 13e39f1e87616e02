"""Load harness: G gateways x A assets against real headend processes on one PostgreSQL.

Each simulated gateway has its own gRPC connection, registers, sends one TelemetryBatch
of A readings every ``cadence`` seconds (random phase) and acks every setpoint APPLIED at
once, like a real gateway. The clients run in their own processes, with pre-built upb
messages and many connections per process, so what is measured is the headend. The
parent process fires dispatches over REST at a rate and reports:

- readings/s stored in PostgreSQL (the headends' committed-rows counters over the window)
- telemetry lag p50/p99: generation ``ts`` -> row visible in ``telemetry`` (probe assets
  polled every ``--lag-poll`` seconds; that is the resolution)
- dispatch POST -> APPLIED p50/p99 (GET polled every 10 ms), the same on the headend's
  clock (dispatch_events), and the POST and GET round trips inside it
- the headends' event-loop lag (``vpp_event_loop_lag_seconds``) over the window
- headend CPU (% of one core) and RSS per process, the PostgreSQL backends' CPU and the
  client processes' CPU, all over the same window
- errors (stream failures, failed POSTs, dispatches not applied in time)

as a table and as JSON (``--json PATH``, or ``-`` for stdout)::

    python -m tools.loadgen --gateways 1000 --assets 10 --cadence 4 --duration 30 \\
        --dispatch-rate 2 --replicas 1 --database-url postgresql://postgres@127.0.0.1/postgres

A fresh database is created on the server (``--database-url`` or
``VPP_BENCH_DATABASE_URL``), migrated and loaded with the sites, and dropped at the end.

The gateways' gRPC client is ``--client raw`` by default: a minimal HTTP/2 client on
asyncio Protocols (``h2.py``: frames packed with ``struct``, the request
headers HPACK-encoded once per process, flow control honoured). grpclib's client runs
h2/hyperframe in pure Python and on a 2-core machine cost about as much CPU as the headend
it measured; ``--client grpclib`` keeps it selectable to compare the two. Both drive the
same gateway logic (`clients.gateway`). Clients and the parent run on uvloop where it is
installed (a dependency of vpp-headend), like the headends.

Run it from the repository root (``nox -s loadgen`` does). The modules: `cli` (flags),
`harness` (one run), `fleet` (database, headend and client processes), `clients` (the
simulated gateways) on `calls` (`h2` + `h2frames`, or grpclib), `measure` (the window)
with `dispatcher` (REST), `dbsample` (database probes) and `metrics` (/metrics), `report`.
"""

from __future__ import annotations

from .calls import CLIENTS, CONNECT, Raw
from .clients import ClientStats, Stop, gateway
from .config import LoadConfig
from .fleet import HeadendProc, fresh_database, load_registry, start_headends, stop_headends
from .harness import run
from .messages import asset_id, batch_frames, register_frame, site_id
from .metrics import stored_rows
from .procstat import cpu_s
from .report import Report

__all__ = [
    "CLIENTS",
    "CONNECT",
    "ClientStats",
    "HeadendProc",
    "LoadConfig",
    "Raw",
    "Report",
    "Stop",
    "asset_id",
    "batch_frames",
    "cpu_s",
    "fresh_database",
    "gateway",
    "load_registry",
    "register_frame",
    "run",
    "site_id",
    "start_headends",
    "stop_headends",
    "stored_rows",
]
