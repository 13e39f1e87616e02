"""Start the real system as separate processes: one headend and N gateways (test and demo tool).

Two gateway layouts over the same assets:

- **gateway mode**: one ``vpp-gateway run`` process serving many assets of one site;
- **legacy mode**: one legacy agent process per asset (``legacy: true`` site files).

Every process writes its log to a file in the work directory; `Proc.wait_for_log` polls it.
Only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago on 127.0.0.1 (held open together
    while picked: two `free_port` calls in a row can return the same port)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Proc:
    """One child process with its command line and log file; restartable."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self) -> Proc:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n=== start #{self.starts}: {' '.join(self.argv)}\n".encode())
        log.flush()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``; returns the exit code."""
        if not self.running:
            return self.process.returncode if self.process else None
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return await self.kill()

    async def kill(self) -> int | None:
        """SIGKILL: no goodbye, no flush (a crash or power loss)."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            return await self.process.wait()
        return self.process.returncode if self.process else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since_start(self) -> str:
        """The log of the current run only."""
        text = self.log()
        marker = f"=== start #{self.starts}:"
        return text[text.rfind(marker) :] if marker in text else text

    async def wait_for_log(self, pattern: str, timeout: float = 20.0, *, count: int = 1) -> str:
        """Wait until this run's log matches ``pattern`` ``count`` times; return the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            matches = regex.findall(self.log_since_start())
            if len(matches) >= count:
                return str(matches[-1])
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited while waiting for {pattern!r}:\n{self.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: no {pattern!r} within {timeout}s:\n{self.log()[-3000:]}"
                )
            await asyncio.sleep(0.05)


def write_site(
    path: Path,
    site_id: str,
    assets: Sequence[dict[str, object]],
    *,
    headend_port: int,
    tick_s: float = 1.0,
    legacy: bool = False,
    groups: Sequence[str] = (),
    gateway: dict[str, object] | None = None,
) -> Path:
    """Write a site file (the same format the examples use)."""
    doc: dict[str, object] = {
        "site_id": site_id,
        "headend": {"host": "127.0.0.1", "port": headend_port},
        "telemetry_interval_s": tick_s,
        "legacy": legacy,
        "groups": list(groups),
        "assets": list(assets),
    }
    if gateway:
        doc["gateway"] = gateway
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


#: Gateway knobs for tests and the demo: heartbeats every second, a frozen peer noticed in
#: about 3 s (HTTP/2 PING) or 3 heartbeats, reconnect within a second or two.
FAST_GATEWAY: dict[str, object] = {
    "heartbeat_interval_s": 1.0,
    "keepalive_time_s": 2.0,
    "keepalive_timeout_s": 2.0,
    "reconnect_base_s": 0.2,
    "reconnect_cap_s": 2.0,
}

_KINDS: list[tuple[str, float]] = [
    ("pv", 100.0),
    ("bess", 250.0),
    ("ev_charger", 22.0),
    ("load", 50.0),
    ("meter", 0.0),
]


def fleet_assets(site_id: str, n: int) -> list[dict[str, object]]:
    """``n`` assets cycling through the kinds (one genset), each with its own steady reading.

    Every simulator is parameterised so that no two assets report the same power/SoC and
    readings stay steady between ticks: PV has its solar noon *now* (flat top of the curve,
    whatever the wall clock), loads and meters have no noise and distinct base loads,
    batteries distinct initial SoC, EV chargers distinct capacities.
    """
    now = datetime.now(UTC)
    noon_h = round(now.hour + now.minute / 60, 3)
    out: list[dict[str, object]] = []
    for i in range(n):
        kind, cap = ("genset", 200.0) if i == 5 else _KINDS[i % len(_KINDS)]
        asset: dict[str, object] = {
            "asset_id": f"{site_id}-{kind.replace('_', '')}-{i + 1}",
            "kind": kind,
        }
        if kind != "meter":
            asset["capacity_kw"] = cap + i
        if kind == "genset":  # off, or at least 60 kW: the split commits it only when needed
            asset["min_stable_kw"] = 60.0
        sim: dict[str, object] = {}
        if kind == "pv":
            sim = {"solar_noon_utc_h": noon_h, "day_length_h": 24}
        elif kind == "bess":
            asset["energy_kwh"] = 2 * (cap + i)
            sim = {"initial_soc_pct": 30 + i}
        elif kind == "load":  # consumption is negative
            sim = {"base_kw": -(10.0 + i), "noise_kw": 0}
        elif kind == "meter":
            sim = {"base_kw": 10.0 + i, "noise_kw": 0, "amplitude_kw": 0}
        if sim:
            asset["simulator"] = sim
        out.append(asset)
    return out


@dataclass
class Launcher:
    """Starts and tracks the processes of one system under test in ``workdir``."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def headend(
        self,
        database_url: str,
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        extra: Sequence[str] = (),
        name: str = "headend",
        heartbeat_s: float | None = 1.0,
        keepalive_s: float | None = 2.0,
    ) -> Proc:
        """A ``vpp-headend serve`` process (not started); short heartbeat/keepalive by default."""
        picked = free_ports(2)
        grpc_port = grpc_port or picked[0]
        http_port = http_port or picked[1]
        argv = [
            str(BIN / "vpp-headend"),
            "serve",
            "--host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--database-url",
            database_url,
            *extra,
        ]
        if heartbeat_s is not None:
            argv += ["--heartbeat-interval", str(heartbeat_s)]
        proc = Proc(name, argv, self.workdir / f"{name}.log")
        proc.env["VPP_GRPC_PORT"] = str(grpc_port)
        proc.env["VPP_HTTP_PORT"] = str(http_port)
        if keepalive_s is not None:
            proc.env["VPP_KEEPALIVE_TIME_S"] = str(keepalive_s)
            proc.env["VPP_KEEPALIVE_TIMEOUT_S"] = str(keepalive_s)
        self.procs.append(proc)
        return proc

    def gateway(
        self,
        site_file: Path,
        *,
        headend: str | None = None,
        extra: Sequence[str] = (),
        name: str = "",
    ) -> Proc:
        name = name or f"gateway-{site_file.stem}"
        argv = [
            str(BIN / "vpp-gateway"),
            "run",
            str(site_file),
            "--state-dir",
            str(self.workdir / "state" / site_file.stem),
        ]
        if headend:
            argv += ["--headend", headend]
        proc = Proc(name, [*argv, *extra], self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def gateway_mode(
        self,
        site_id: str,
        n_assets: int,
        *,
        headend_port: int,
        tick_s: float = 1.0,
        groups: Sequence[str] = (),
        gateway: dict[str, object] | None = None,
    ) -> tuple[Path, list[str]]:
        """One site file with ``n_assets`` assets; returns (path, asset ids).

        ``gateway`` is the site file's ``gateway:`` section (default `FAST_GATEWAY`).
        """
        assets = fleet_assets(site_id, n_assets)
        path = write_site(
            self.workdir / f"{site_id}.yaml",
            site_id,
            assets,
            headend_port=headend_port,
            tick_s=tick_s,
            groups=groups,
            gateway=FAST_GATEWAY if gateway is None else gateway,
        )
        return path, [str(a["asset_id"]) for a in assets]

    def legacy_mode(
        self,
        prefix: str,
        n_assets: int,
        *,
        headend_port: int,
        tick_s: float = 1.0,
        gateway: dict[str, object] | None = None,
    ) -> list[Path]:
        """``n_assets`` legacy site files, one asset (and one process) each."""
        paths = []
        for asset in fleet_assets(prefix, n_assets):
            asset_id = str(asset["asset_id"])
            paths.append(
                write_site(
                    self.workdir / f"{asset_id}.yaml",
                    asset_id,
                    [asset],
                    headend_port=headend_port,
                    tick_s=tick_s,
                    legacy=True,
                    gateway=FAST_GATEWAY if gateway is None else gateway,
                )
            )
        return paths

    async def import_sites(self, database_url: str, site_files: Sequence[Path]) -> str:
        """``vpp-headend assets import`` (the registry); returns its output, raises on failure."""
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "vpp-headend"),
            "assets",
            "import",
            *map(str, site_files),
            "--database-url",
            database_url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"assets import failed ({proc.returncode}):\n{text}")
        return text

    @staticmethod
    def http_url(proc: Proc) -> str:
        return f"http://127.0.0.1:{proc.env['VPP_HTTP_PORT']}"

    @staticmethod
    def http_port(proc: Proc) -> int:
        return int(proc.env["VPP_HTTP_PORT"])

    @staticmethod
    def grpc_port(proc: Proc) -> int:
        return int(proc.env["VPP_GRPC_PORT"])

    async def stop_all(self) -> None:
        """Gateways first, then the headend, each gracefully (SIGKILL after a timeout)."""
        for proc in sorted(self.procs, key=lambda p: p.name.startswith("headend")):
            await proc.stop()
