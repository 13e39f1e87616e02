"""Gateway CPU and memory for 10, 100 and 1,000 simulated assets at a 1 s tick.

The headend (`vpp_gateway.testing`, a minimal real grpclib server) and the gateway (the real
``vpp-gateway run`` command) each run in their own process, so the gateway's CPU time read
from /proc is its own. Target: 100 assets < 10 % of one core and RSS < 80 MB.

    python bench/bench_gateway.py [--assets 10,100,1000] [--seconds 12]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ["pv", "bess", "load", "ev_charger", "genset", "meter", "other"]


def site_yaml(n: int, port: int) -> str:
    lines = [
        "site_id: bench",
        f"headend: {{host: 127.0.0.1, port: {port}}}",
        "telemetry_interval_s: 1",
        "assets:",
    ]
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        lines.append(f"  - {{asset_id: b-{kind}-{i:04d}, kind: {kind}, capacity_kw: 100}}")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(n: int, seconds: float, warmup: float) -> tuple[float, float, int]:
    """(CPU % of one core, peak RSS MB, readings the headend received) for n assets."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site.yaml"
        site.write_text(site_yaml(n, port))
        headend = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vpp_gateway.testing",
                "--port",
                str(port),
                "--no-record",
                "--heartbeat",
                "15",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert headend.stdout is not None
        headend.stdout.readline()  # "listening ..."
        gateway = subprocess.Popen(
            [sys.executable, "-m", "vpp_gateway.cli", "run", str(site), "--log-level", "warning"],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(warmup)
            c0, t0 = cpu_seconds(gateway.pid), time.monotonic()
            peak = 0.0
            while time.monotonic() - t0 < seconds:
                time.sleep(0.5)
                peak = max(peak, rss_mb(gateway.pid))
            c1, t1 = cpu_seconds(gateway.pid), time.monotonic()
        finally:
            gateway.terminate()
            gateway.wait(10)
            headend.terminate()
            out, _ = headend.communicate(timeout=10)
        received = 0
        for line in out.splitlines():
            if line.startswith("readings="):
                received = int(line.split()[0].split("=")[1])
        return 100 * (c1 - c0) / (t1 - t0), peak, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--assets", default="10,100,1000")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    print(f"{'assets':>7} {'cpu % of 1 core':>16} {'peak RSS MB':>12} {'readings at headend':>20}")
    for n in (int(x) for x in args.assets.split(",")):
        cpu, rss, received = measure(n, args.seconds, args.warmup)
        print(f"{n:>7} {cpu:>16.1f} {rss:>12.1f} {received:>20}", flush=True)
    print("target: 100 assets < 10 % of one core, RSS < 80 MB (1 s tick)")


if __name__ == "__main__":
    main()
