"""Regenerate the protocol code from proto/ (run by `nox -s proto` / `proto_check`).

Writes two trees inside vpp-protocol, both committed and never edited by hand:

* ``_generated/``: betterproto2 dataclasses + async grpclib client/server (the public types);
* ``_upb/``: google protobuf (upb) classes of the same schema, for the headend's hot path
  and for gRPC server reflection.

``--check`` regenerates into a temporary directory and fails on any difference.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PKG = ROOT / "packages" / "vpp-protocol" / "src" / "vpp_protocol"
TARGETS = ("_generated", "_upb")
BETTERPROTO_OPTS = "client_generation=async,server_generation=async"


def _protos() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> None:
    """Generate both trees under ``out`` (which must exist and be empty)."""
    env = dict(os.environ)
    # protoc finds the betterproto2 plugin only on PATH (docs/stack_notes.md).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    gen, upb = out / "_generated", out / "_upb"
    gen.mkdir()
    upb.mkdir()
    base = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}"]
    subprocess.run(
        [
            *base,
            f"--python_betterproto2_out={gen}",
            f"--python_betterproto2_opt={BETTERPROTO_OPTS}",
            *_protos(),
        ],
        check=True,
        env=env,
        cwd=PROTO_ROOT,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [*base, f"--python_out={upb}", f"--pyi_out={upb}", *_protos()],
        check=True,
        env=env,
        cwd=PROTO_ROOT,
    )
    # Make the upb tree importable as vpp_protocol._upb.vpp.agent.v1.agent_pb2.
    for d in [upb, *(p for p in upb.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()


def _diff(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [f"only in {cmp.left}: {n}" for n in cmp.left_only]
    out += [f"only in {cmp.right}: {n}" for n in cmp.right_only]
    out += [f"differs: {Path(cmp.left) / n}" for n in cmp.diff_files]
    # dircmp compares shallowly (size+mtime); confirm same-size files byte by byte.
    out += [
        f"differs: {Path(cmp.left) / n}"
        for n in cmp.same_files
        if (Path(cmp.left) / n).read_bytes() != (Path(cmp.right) / n).read_bytes()
    ]
    for sub in cmp.common_dirs:
        out += _diff(a / sub, b / sub)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if regeneration changes anything"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        if args.check:
            problems = [p for t in TARGETS for p in _diff(PKG / t, out / t)]
            if problems:
                print(
                    "generated protocol code is stale; run `nox -s proto`:", *problems, sep="\n  "
                )
                return 1
            print("generated protocol code is up to date")
            return 0
        for t in TARGETS:
            shutil.rmtree(PKG / t, ignore_errors=True)
            shutil.copytree(out / t, PKG / t)
    print(f"regenerated {', '.join(TARGETS)} in {PKG}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
