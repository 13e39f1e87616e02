"""`nox -s demo` end to end: the scripted scenario runs, prints its sections, exits 0.

The test points the demo at the test PostgreSQL (``--database-url``) to save the embedded
server's start-up; the default path (embedded PostgreSQL) is the same script otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_runs_the_whole_scenario_and_exits_0(db_url: str, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tools" / "demo.py"),
        "--database-url",
        db_url,
        "--workdir",
        str(tmp_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out_b, _ = await asyncio.wait_for(proc.communicate(), 150)
    out = out_b.decode(errors="replace")
    print(out[-3000:])
    assert proc.returncode == 0, out[-5000:]
    for heading in (
        "1. Start",
        "2. Telemetry arriving per asset",
        "3. Per-asset dispatch",
        "4. Site dispatch",
        "5. Group dispatch",
        "6. Time in force",
        "7. Gateway restart",
        "8. Summary",
        "Keep it running yourself",
    ):
        assert heading in out, heading
    assert "1 of 12 site-a assets changed setpoint" in out
    assert "sum of the split = 400.000 kW (requested 400.0 kW): exact" in out
    assert "is pending (target offline" in out
    assert "delivered after reconnect and applied" in out
    # a duration ends on the gateway and the telemetry shows the release; a cancel is acked
    assert "telemetry now: setpoint_kw null" in out
    assert "/cancel -> 202" in out
    # the demo creates an operator token, prints it, and uses it (REST then requires one)
    assert "operator token created" in out
    assert "Authorization: Bearer <token>" in out
    assert "vpp-headend serve" in out
    assert "/metrics" in out
    assert "/schema" in out
    # every process it started is gone
    pids = await asyncio.create_subprocess_exec(
        "pgrep", "-f", str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    leftover, _ = await pids.communicate()
    assert not leftover.strip(), f"processes left running: {leftover.decode()}"
