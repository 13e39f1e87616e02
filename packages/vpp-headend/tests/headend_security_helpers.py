"""Helpers of the headend security tests: a pilot PKI in tmp_path (made with the
headend's own `certs` tooling) and in-test agents that connect over mutual TLS."""

from __future__ import annotations

import asyncio
import importlib.util
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from grpclib.client import Channel

from vpp_headend.certs import init_ca, issue_server, issue_site


def _headend_conftest() -> ModuleType:
    """This directory's conftest (the name `conftest` is taken by several test dirs)."""
    name = "vpp_headend_tests_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("conftest.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_conftest = _headend_conftest()
Agent: Any = _conftest.Agent
FAST: dict[str, Any] = _conftest.FAST
Running: Any = _conftest.Running


@dataclass(frozen=True)
class Pki:
    """Two CAs (a rollover), a server certificate, site certificates from each CA."""

    root: Path
    ca1: Path
    ca2: Path

    @property
    def server_cert(self) -> Path:
        return self.ca1 / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.ca1 / "server.key"

    def site(self, site_id: str, ca: int = 1) -> tuple[Path, Path]:
        d = (self.ca1 if ca == 1 else self.ca2) / "sites"
        return d / f"{site_id}.pem", d / f"{site_id}.key"

    def bundle(self, *cas: int) -> Path:
        """A CA bundle file trusting the given CAs (1, 2 or both)."""
        path = self.root / f"bundle-{'-'.join(map(str, cas))}.pem"
        path.write_bytes(
            b"".join(((self.ca1 if c == 1 else self.ca2) / "ca.pem").read_bytes() for c in cas)
        )
        return path

    def tls_settings(self, *cas: int) -> dict[str, Path]:
        return {
            "tls_cert": self.server_cert,
            "tls_key": self.server_key,
            "tls_client_ca": self.bundle(*(cas or (1,))),
        }


def make_pki(root: Path, sites: tuple[str, ...] = ("site-a", "site-b")) -> Pki:
    ca1, ca2 = root / "ca1", root / "ca2"
    init_ca(ca1, name="test CA 1")
    init_ca(ca2, name="test CA 2")
    issue_server(ca1, ["localhost", "127.0.0.1"])
    for s in sites:
        issue_site(ca1, s)
        issue_site(ca2, s)
    return Pki(root, ca1, ca2)


def client_ssl(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """What a gateway builds: verify the headend against ``ca``, present a site cert."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def tls_agent(port: int, site_id: str, ctx: ssl.SSLContext) -> Any:
    """An in-test agent whose channel runs over TLS (close it with ``await agent.close()``)."""
    agent = Agent(port=port, site_id=site_id)
    agent.channel = Channel("127.0.0.1", port, ssl=ctx)
    agent.reader = asyncio.create_task(agent._read())
    return agent
