"""Checks a headend makes before it serves: the ports are free, the database answers and
is migrated, the TLS files load; and what it announces at start (REST auth mode,
plaintext gRPC)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from sqlalchemy.ext.asyncio import AsyncEngine

from .db import security_repo
from .db.engine import ping
from .db.migrate import current_revision, head_revision
from .db.url import redacted
from .errors import ListenError, UnavailableError
from .logs import log_event
from .settings import Settings
from .tls import TlsFileError, server_context

log = logging.getLogger(__name__)


async def check_database(engine: AsyncEngine, url: str) -> None:
    """UnavailableError naming the problem unless the database answers at the schema
    revision this headend was built for."""
    try:
        await ping(engine)
    except Exception as exc:
        raise UnavailableError(f"database {redacted(url)} is not reachable: {exc}") from exc
    have, want = await current_revision(engine), head_revision()
    if have != want:
        raise UnavailableError(
            f"database schema is at {have or 'nothing'}, this headend needs {want}: "
            "run `vpp-headend db upgrade`"
        )


def listen_socket(host: str, port: int, what: str) -> socket.socket:
    """A TCP socket listening on ``host:port`` (SO_REUSEADDR, as uvicorn and grpclib bind);
    ListenError naming the address and ``what`` ("HTTP", "gRPC") when that fails."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family = info[0][0]
        return socket.create_server((host, port), family=family, backlog=None, reuse_port=False)
    except OSError as exc:
        raise ListenError(host, port, what, exc) from None


def check_ports(s: Settings) -> None:
    """ListenError if the HTTP or the gRPC port cannot be listened on, before anything
    starts (an embedded database, migrations). A port of 0 (any free one) always can."""
    for what, port in (("HTTP", s.http_port), ("gRPC", s.grpc_port)):
        if port:
            listen_socket(s.host, port, what).close()


def tls_context(s: Settings) -> ssl.SSLContext | None:
    """The mutual-TLS server context (None without TLS); UnavailableError naming the file
    that does not load. Reads files: blocking."""
    if s.tls_cert is None or s.tls_key is None or s.tls_client_ca is None:
        return None
    try:
        return server_context(s.tls_cert, s.tls_key, s.tls_client_ca)
    except TlsFileError as exc:
        raise UnavailableError(f"cannot load the TLS files: {exc}") from None


async def grpc_ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The mutual-TLS server context; None (with a warning when not loopback) for plaintext."""
    if s.tls:
        return await asyncio.to_thread(tls_context, s)
    if s.insecure:
        log_event(
            log,
            "insecure_plaintext_grpc",
            level=logging.WARNING,
            host=s.host,
            detail="gRPC without TLS (--insecure): site identities are not verified; "
            "any client can claim any registered site. Never use this in production.",
        )
    else:
        log_event(log, "plaintext_grpc_loopback", host=s.host)
    return None


async def log_rest_auth(engine: AsyncEngine, s: Settings) -> None:
    """Say at start whether the REST API asks for tokens (docs/security.md)."""
    _, tokens = await security_repo.role_of(engine, "")
    if s.rest_auth == "required" or tokens:
        log_event(log, "rest_auth", mode=s.rest_auth, enforced=True)
        return
    log_event(
        log,
        "rest_auth",
        level=logging.INFO if s.loopback else logging.WARNING,
        mode=s.rest_auth,
        enforced=False,
        detail="no API token exists: the REST API is open until one is created "
        "(vpp-headend tokens create --role operator)",
    )


__all__ = [
    "check_database",
    "check_ports",
    "grpc_ssl_context",
    "listen_socket",
    "log_rest_auth",
    "tls_context",
]
