"""Gateway status: a JSON snapshot written to the state directory, read by `vpp-gateway status`.

The running agent replaces ``status.json`` atomically every tick; the CLI reads it. No
port is opened on site hardware for this.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"


def write_status(state_dir: Path, snapshot: dict[str, Any]) -> None:
    """Replace the status file atomically (blocking: run it in a thread)."""
    tmp = state_dir / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(snapshot, indent=1, default=str))
    os.replace(tmp, state_dir / STATUS_FILE)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The last status the agent wrote, or None if there is none."""
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _num(v: object, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}{unit}"
    return f"{v}{unit}"


def render(snapshot: dict[str, Any], now: datetime) -> str:
    """Human-readable status text."""
    updated = datetime.fromisoformat(snapshot["updated_at"])
    age = (now - updated).total_seconds()
    conn = snapshot["connection"]
    spool = snapshot["spool"]
    lines = [
        f"site {snapshot['site_id']}  pid {snapshot['pid']}  "
        f"agent {snapshot['agent_version']}  updated {age:.0f} s ago",
        f"headend {conn['headend']}: {conn['state']} since {conn['since']}"
        + (f"  (last reason: {conn['last_reason']})" if conn.get("last_reason") else ""),
        f"  session {conn['session_id'] or '-'}  epoch {conn['epoch']}  "
        f"connects {conn['connects']}  failed attempts {conn['failures']}",
        f"spool: {spool['depth']} readings waiting, {spool['dropped']} dropped, "
        f"{spool['used_bytes'] / 1e6:.1f} of {spool['max_bytes'] / 1e6:.1f} MB",
        _failsafe_line(snapshot.get("failsafe")),
        "",
        f"{'asset':<24} {'kind':<10} {'seq':>8} {'power_kw':>10} {'setpoint':>10} "
        f"{'rate/min':>8} {'status':<8} last apply",
    ]
    for a in snapshot["assets"]:
        flag = "" if a["accepted"] else f"  REJECTED: {a['reject_reason']}"
        lines.append(
            f"{a['asset_id']:<24} {a['kind']:<10} {a['seq']:>8} {_num(a['power_kw']):>10} "
            f"{_num(a['setpoint_kw']):>10} {_num(a['rate_per_min']):>8} {a['status'] or '-':<8} "
            f"{a['applied_at'] or '-'}{flag}"
        )
        control = a.get("control")
        if control:
            lines.append(f"  {_control_text(control)}")
    return "\n".join(lines)


def _control_text(control: dict[str, Any]) -> str:
    """The setpoint in force on one asset and its end, for people."""
    until = f"until {control['ends_at']}" if control.get("ends_at") else "no end"
    text = f"in force: setpoint {control['setpoint_id']} at {_num(control['power_kw'])} kW, {until}"
    if control.get("releasing"):
        text += f"  (RELEASING: {control['releasing']}, device has not confirmed; retried)"
    return text


def _failsafe_line(failsafe: dict[str, Any] | None) -> str:
    if not failsafe:
        return "fail-safe: -"
    if not failsafe["after_s"]:
        return "fail-safe: OFF (failsafe_after_s 0)"
    state = "TRIPPED (assets released)" if failsafe["tripped"] else "armed"
    return (
        f"fail-safe: {state}, releases after {_num(failsafe['after_s'])} s without a session "
        f"(silent {_num(failsafe['silent_s'])} s)"
    )
