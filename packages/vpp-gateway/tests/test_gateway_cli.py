"""The `vpp-gateway` command: clear errors for bad site files, check, simulate, status."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpp_gateway import __version__
from vpp_gateway.cli import app

GOOD = """\
site_id: site-c
headend: {host: 127.0.0.1, port: 1}
assets:
  - {asset_id: c-pv-1, kind: pv, capacity_kw: 80}
  - {asset_id: c-bess-1, kind: bess, capacity_kw: 50, energy_kwh: 100}
"""

BAD = {
    "missing_site_id": ("assets:\n  - {asset_id: a, kind: pv}\n", ["site_id"]),
    "duplicate_asset": (
        "site_id: s\nassets:\n  - {asset_id: a, kind: pv}\n  - {asset_id: a, kind: bess}\n",
        ["assets[1].asset_id", "duplicate", ":4:"],
    ),
    "min_gt_max": (
        "site_id: s\nassets:\n  - asset_id: a\n    kind: bess\n    min_kw: 10\n    max_kw: 5\n",
        ["assets[0].min_kw", "greater than max_kw"],
    ),
    "unknown_kind": (
        "site_id: s\nassets:\n  - {asset_id: a, kind: windmill}\n",
        ["assets[0].kind", "windmill"],
    ),
    "bad_yaml": ("site_id: s\nassets: [\n", ["not valid YAML"]),
    "bad_sim_param": (
        "site_id: s\nassets:\n  - {asset_id: a, kind: pv, simulator: {clouds: 1}}\n",
        ["unknown simulator parameter", "clouds"],
    ),
}

runner = CliRunner()


def _write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_site_file_is_a_clear_error(tmp_path: Path, case: str) -> None:
    text, expected = BAD[case]
    path = _write(tmp_path, text)
    result = runner.invoke(app, ["check", str(path), "--offline"])
    assert result.exit_code != 0
    out = result.output
    assert str(path) in out or "clouds" in out
    for word in expected:
        assert word in out, out
    assert "Traceback" not in out


SEVERAL = """\
nickname: the depot
headend: {host: 127.0.0.1, port: 1}
assets:
  - {asset_id: d-pv-1, kind: solar, capacity_kw: 80}
  - {asset_id: d-bess-1, kind: bess, capacity_kw: -50}
  - {asset_id: d-pv-1, kind: pv}
"""


def test_check_reports_every_problem_of_a_file_in_one_run(tmp_path: Path) -> None:
    path = _write(tmp_path, SEVERAL)
    result = runner.invoke(app, ["check", str(path), "--offline"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: {path}:1: nickname: unknown field `nickname`; expected one of: site_id, "
        "assets, headend, telemetry_interval_s, groups, legacy, gateway, failsafe_after_s",
        f"error: {path}:1: site_id: missing required field `site_id`",
        f"error: {path}:4: assets[0].kind: 'solar' is not a valid kind: must be one of pv, "
        "bess, meter, genset, ev_charger, load, other",
        f"error: {path}:5: assets[1].capacity_kw: -50.0 is negative",
        f"error: {path}:6: assets[2].asset_id: duplicate asset_id 'd-pv-1' (also assets[0])",
        f"error: {path}: 5 problems",
    ]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["run", "{path}", "--tick", "soon"], {}, "'--tick'"),
        (["run", "{path}"], {"VPP_GATEWAY_TICK": "soon"}, "VPP_GATEWAY_TICK"),
        (["run", "{path}", "--log-format", "xml"], {}, "'--log-format'"),
        (["run", "{path}", "--colour"], {}, "--colour"),
        (["run"], {}, "SITE_FILE"),
        (["run", "{missing}"], {}, "missing.yaml: cannot read: No such file or directory"),
        (["check", "{dir}"], {}, "cannot read: Is a directory"),
        (["check", "{path}", "--headend-url", "headend:8000"], {}, "--headend-url"),
    ],
    ids=[
        "bad-value",
        "bad-env",
        "bad-choice",
        "unknown-option",
        "no-file",
        "missing",
        "dir",
        "url",
    ],
)
def test_a_bad_argument_is_one_line_naming_it_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    path = _write(tmp_path, GOOD)
    where = {"path": str(path), "missing": str(tmp_path / "missing.yaml"), "dir": str(tmp_path)}
    result = runner.invoke(app, [a.format(**where) for a in args], env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert named.lower() in lines[0].lower()
    assert "Traceback" not in result.output


def test_version_is_one_line() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip().splitlines() == [f"vpp-gateway {__version__}"]


def test_run_with_bad_file_exits_nonzero(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(_write(tmp_path, BAD["unknown_kind"][0]))])
    assert result.exit_code != 0
    assert "windmill" in result.output


def test_bad_headend_override(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    result = runner.invoke(app, ["check", str(path), "--headend", "localhost"])
    assert result.exit_code != 0
    assert "HOST:PORT" in result.output


def test_check_reports_refused_headend(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(
        app,
        ["check", str(_write(tmp_path, GOOD)), "--headend", f"127.0.0.1:{port}", "--timeout", "2"],
    )
    assert result.exit_code == 1
    assert "ok: " in result.output
    assert "refused" in result.output


@pytest.fixture
def headend_process() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpp_gateway.testing", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening")
        yield port
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


def test_check_reaches_headend(tmp_path: Path, headend_process: int) -> None:
    path = _write(tmp_path, GOOD)
    result = runner.invoke(app, ["check", str(path), "--headend", f"127.0.0.1:{headend_process}"])
    assert result.exit_code == 0, result.output
    assert "answers" in result.output


def test_options_come_from_the_environment(tmp_path: Path, headend_process: int) -> None:
    """The site file and --headend from VPP_GATEWAY_SITE_FILE and VPP_GATEWAY_HEADEND; an
    option given on the command line wins over its variable."""
    path = _write(tmp_path, GOOD)  # its headend port (1) is not the one listening
    env = {
        "VPP_GATEWAY_SITE_FILE": str(path),
        "VPP_GATEWAY_HEADEND": f"127.0.0.1:{headend_process}",
    }
    result = runner.invoke(app, ["check"], env=env)
    assert result.exit_code == 0, result.output
    assert f"ok: headend 127.0.0.1:{headend_process} answers" in result.output
    result = runner.invoke(app, ["check", "--headend", "localhost"], env=env)
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


def test_simulate_prints_deterministic_telemetry(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    args = [
        "simulate",
        str(path),
        "--fast",
        "--ticks",
        "3",
        "--json",
        "--start",
        "2026-06-21T12:00:00+00:00",
        "--setpoint",
        "c-bess-1=-20",
    ]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output
    rows = [json.loads(line) for line in first.output.splitlines()]
    assert len(rows) == 6
    assert {r["asset_id"] for r in rows} == {"c-pv-1", "c-bess-1"}
    bess = [r for r in rows if r["asset_id"] == "c-bess-1"]
    assert all(r["power_kw"] == -20 for r in bess)
    assert bess[0]["soc_pct"] < bess[-1]["soc_pct"]  # charging
    pv = [r for r in rows if r["asset_id"] == "c-pv-1"]
    assert all(0 < r["power_kw"] <= 80 for r in pv)  # noon: producing
    table = runner.invoke(app, ["simulate", str(path), "--fast", "--ticks", "1"])
    assert table.exit_code == 0
    assert "c-pv-1" in table.output


def test_status_without_state(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", str(_write(tmp_path, GOOD))])
    assert result.exit_code == 1
    assert "has not run" in result.output


def test_run_then_status(tmp_path: Path, headend_process: int) -> None:
    """The real command in a subprocess: it connects, writes status, stops on SIGTERM."""
    path = _write(
        tmp_path,
        GOOD.replace("port: 1", f"port: {headend_process}") + "telemetry_interval_s: 0.2\n",
    )
    state = tmp_path / "state-from-env"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vpp_gateway.cli", "run", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "VPP_GATEWAY_STATE_DIR": str(state), "VPP_GATEWAY_LOG_FORMAT": "json"},
    )
    try:
        deadline = time.monotonic() + 10
        snap = None
        while time.monotonic() < deadline:
            result = runner.invoke(app, ["status", str(path), "--json", "--state-dir", str(state)])
            if result.exit_code == 0:
                snap = json.loads(result.output)
                if snap["connection"]["state"] == "connected" and snap["assets"][0]["seq"] >= 3:
                    break
            time.sleep(0.2)
        assert snap is not None
        assert snap["connection"]["state"] == "connected", snap
        text = runner.invoke(app, ["status", str(path)], env={"VPP_GATEWAY_STATE_DIR": str(state)})
        assert "c-bess-1" in text.output
        assert "connected" in text.output
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines()]  # --log-format json, from the env
    connected = next(e for e in events if e["event"] == "connected")
    assert (connected["level"], connected["accepted"], connected["rejected"]) == ("info", 2, 0)
    assert events[-1]["event"] == "stopped"
    assert (state / "gateway.sqlite3").exists()  # VPP_GATEWAY_STATE_DIR
