"""The harness's command line: flags -> `LoadConfig`, one run, the table and the JSON."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from .calls import CLIENTS
from .config import LoadConfig
from .harness import run

DESCRIPTION = (
    "Load harness: G gateways x A assets against real headend processes on one PostgreSQL."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.loadgen", description=DESCRIPTION)
    d = LoadConfig()
    parser.add_argument("--gateways", "-G", type=int, default=d.gateways)
    parser.add_argument("--assets", "-A", type=int, default=d.assets)
    parser.add_argument("--cadence", type=float, default=d.cadence_s)
    parser.add_argument("--duration", type=float, default=d.duration_s)
    parser.add_argument("--dispatch-rate", type=float, default=d.dispatch_rate)
    parser.add_argument("--replicas", type=int, default=d.replicas)
    parser.add_argument(
        "--control-replica",
        action="store_true",
        help="start one more headend that holds no gateways and serves all REST traffic",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="also fetch the console's fleet page once a second and keep one browser's "
        "/events stream open (the figures of issue 18)",
    )
    parser.add_argument("--client-procs", type=int, default=d.client_procs)
    parser.add_argument("--connect-rate", type=float, default=d.connect_rate)
    parser.add_argument("--lag-poll", type=float, default=d.lag_poll_s)
    parser.add_argument("--connect-timeout", type=float, default=d.connect_timeout_s)
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default=d.client,
        help="the simulated gateways' gRPC client: 'raw' (default) is a minimal HTTP/2 "
        "client (tools/loadgen/h2.py) cheap enough that the headend is what is measured; "
        "'grpclib' is the reference client, whose pure-Python h2 cost about as much CPU as "
        "the headend",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("VPP_BENCH_DATABASE_URL") or os.environ.get("VPP_TEST_DATABASE_URL"),
    )
    parser.add_argument("--log-dir", type=Path, help="keep the headends' logs here")
    parser.add_argument("--json", help="write the report as JSON to this path ('-' = stdout)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url or VPP_BENCH_DATABASE_URL is required (a server URL)")
    cfg = LoadConfig(
        gateways=args.gateways,
        assets=args.assets,
        cadence_s=args.cadence,
        duration_s=args.duration,
        dispatch_rate=args.dispatch_rate,
        replicas=args.replicas,
        client_procs=args.client_procs,
        connect_rate=args.connect_rate,
        lag_poll_s=args.lag_poll,
        connect_timeout_s=args.connect_timeout,
        client=args.client,
        control_replica=args.control_replica,
        console=args.console,
    )
    report = run(cfg, args.database_url, log_dir=args.log_dir)
    print(report.table(), flush=True)
    if args.json == "-":
        print(json.dumps(asdict(report), indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2) + "\n")
