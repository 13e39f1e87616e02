"""One full run of the harness: database, headends, clients, measurement, teardown."""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vpp_headend.eventloop import loop_factory

from .config import LoadConfig
from .fleet import (
    fresh_database,
    load_registry,
    start_clients,
    start_headends,
    stop_clients,
    stop_headends,
)
from .measure import measure
from .procstat import raise_nofile
from .report import Report


def run(
    cfg: LoadConfig,
    server_url: str,
    *,
    headend_env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> Report:
    """One full run: database, headends, clients, measurement, teardown."""
    # Imported here: the client processes import this package and have no use for Alembic.
    from vpp_headend.db.migrate import upgrade

    raise_nofile()
    report = Report(config=asdict(cfg))
    report.offered_readings_per_s = cfg.gateways * cfg.assets / cfg.cadence_s
    with fresh_database(server_url) as url, tempfile.TemporaryDirectory() as tmp:
        upgrade(url)
        load_registry(url, cfg.gateways, cfg.assets)
        logs = log_dir or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        headends = start_headends(
            url, cfg.replicas + int(cfg.control_replica), logs, headend_env or {}
        )
        clients = start_clients(cfg, [h.grpc_port for h in headends[: cfg.replicas]])
        try:
            with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
                runner.run(measure(url, headends, cfg, report, clients))
        finally:
            _add_client_totals(report, stop_clients(clients))
            stop_headends(headends)
    report.loadavg = os.getloadavg()
    return report


def _add_client_totals(report: Report, results: list[dict[str, Any] | None]) -> None:
    """The client processes' CPU and errors; a process that sent no totals is `client_lost`."""
    for res in results:
        if res is None:
            report.errors["client_lost"] = report.errors.get("client_lost", 0) + 1
            continue
        report.client_cpu_total_s += res["cpu_s"]
        for k, v in res["errors"].items():
            report.errors[k] = report.errors.get(k, 0) + v
        for k, v in res["samples"].items():
            report.error_samples.setdefault(k, v)
