"""Checks a headend makes before it serves: the database answers and is migrated, the TLS
files load; and what it announces at start (REST auth mode, plaintext gRPC)."""

from __future__ import annotations

import asyncio
import logging
import ssl

from sqlalchemy.ext.asyncio import AsyncEngine

from .db import security_repo
from .db.engine import ping
from .db.migrate import current_revision, head_revision
from .db.url import redacted
from .errors import UnavailableError
from .logs import log_event
from .settings import Settings
from .tls import server_context

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


async def grpc_ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The mutual-TLS server context; None (with a warning when not loopback) for plaintext."""
    if s.tls_cert is not None and s.tls_key is not None and s.tls_client_ca is not None:
        try:
            return await asyncio.to_thread(server_context, s.tls_cert, s.tls_key, s.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise UnavailableError(f"cannot load the TLS files: {exc}") from exc
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


__all__ = ["check_database", "grpc_ssl_context", "log_rest_auth"]
