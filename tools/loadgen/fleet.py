"""The processes of a run: a fresh database loaded with the sites, the headend replicas
(`vpp-headend serve`) and the client processes that carry the simulated gateways."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from .clients import client_main
from .config import LoadConfig
from .messages import asset_id, site_id

_LISTENING = re.compile(r"event=listening .*http_port=(\d+) grpc_port=(\d+)")


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new database on the server, dropped at the end."""
    parts = urlsplit(server_url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    name = f"vpp_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load_registry(url: str, gateways: int, assets: int) -> None:
    """Sites lg0..lgN with A bess assets each (COPY; the site import is per site)."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY sites (site_id) FROM STDIN") as copy:
            for g in range(gateways):
                copy.write_row((site_id(g),))
        with cur.copy(
            "COPY assets (asset_id, site_id, kind, capacity_kw, min_kw, max_kw) FROM STDIN"
        ) as copy:
            for g in range(gateways):
                for a in range(assets):
                    copy.write_row((asset_id(g, a), site_id(g), "bess", 100.0, -100.0, 100.0))


@dataclass
class HeadendProc:
    """A `vpp-headend serve` child process."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    http_port: int = 0
    grpc_port: int = 0


def start_headends(url: str, n: int, logdir: Path, extra_env: dict[str, str]) -> list[HeadendProc]:
    """``n`` headend processes (replicas) on ``url``; returns once all listen."""
    exe = Path(sys.executable).parent / "vpp-headend"
    out: list[HeadendProc] = []
    for i in range(n):
        log_path = logdir / f"headend-{i}.log"
        env = {
            **os.environ,
            "VPP_REPLICA": f"loadgen-{i}",
            **extra_env,
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(exe), "serve", "--database-url", url, "--http-port", "0", "--grpc-port", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        out.append(HeadendProc(proc, log_path))
    deadline = time.monotonic() + 60
    for h in out:
        while not h.grpc_port:
            m = _LISTENING.search(h.log_path.read_text(errors="replace"))
            if m:
                h.http_port, h.grpc_port = int(m.group(1)), int(m.group(2))
            elif h.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"headend did not start: {h.log_path.read_text()[-2000:]}")
            else:
                time.sleep(0.05)
    return out


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the harness dies (Linux), so no headend outlives a
    killed run."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_headends(headends: list[HeadendProc]) -> None:
    for h in headends:
        if h.proc.poll() is None:
            h.proc.send_signal(signal.SIGTERM)
    for h in headends:
        try:
            h.proc.wait(30)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            h.proc.wait()


@dataclass
class ClientProcs:
    """The client processes and what they share with the harness: the stop event, the
    connected and failed counters, and the queue of their totals."""

    procs: list[BaseProcess]
    stop: Any
    connected: Any
    failed: Any
    results: Any


def start_clients(cfg: LoadConfig, ports: list[int]) -> ClientProcs:
    """``cfg.client_procs`` spawned processes, gateway ``g`` in process ``g % client_procs``
    on port ``ports[g % len(ports)]``; they start connecting in a second."""
    ctx = mp.get_context("spawn")
    stop_evt = ctx.Event()
    connected = ctx.Value("i", 0)
    failed = ctx.Value("i", 0)
    results = ctx.Queue()
    t0 = time.monotonic() + 1.0  # CLOCK_MONOTONIC is shared by the processes
    procs: list[BaseProcess] = [
        ctx.Process(
            target=client_main,
            args=(
                ports,
                list(range(i, cfg.gateways, cfg.client_procs)),
                cfg,
                t0,
                stop_evt,
                connected,
                failed,
                results,
            ),
            daemon=True,
        )
        for i in range(min(cfg.client_procs, cfg.gateways))
    ]
    for p in procs:
        p.start()
    return ClientProcs(procs, stop_evt, connected, failed, results)


def stop_clients(clients: ClientProcs) -> list[dict[str, Any] | None]:
    """Stop the client processes; each one's totals, None for one that sent none."""
    clients.stop.set()
    out: list[dict[str, Any] | None] = []
    for p in clients.procs:
        try:
            out.append(clients.results.get(timeout=30 if p.is_alive() else 1))
        except Exception:
            out.append(None)
    for p in clients.procs:
        p.join(10)
    return out
