"""``vpp-headend certs ...`` and ``vpp-headend tokens ...`` (docs/security.md).

``tokens create`` prints the token alone on its last line of standard output, so a
script can take it with ``| tail -n 1``; it is shown once and only its hash is stored.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from .cli_options import (
    CommandError,
    DatabaseUrl,
    DataDir,
    LogFormat,
    LogLevel,
    database,
    logging_from,
    settings_from_env,
)
from .db.engine import make_engine

certs_app = typer.Typer(no_args_is_help=True, help="Certificates for mutual TLS (a pilot CA).")
tokens_app = typer.Typer(no_args_is_help=True, help="Bearer tokens for the REST API.")

CaDir = Annotated[
    Path, typer.Option("--dir", help="CA directory (ca.pem, ca.key)", show_default=True)
]
Days = Annotated[int, typer.Option("--days", help="Validity in days")]


@certs_app.command("init")
def certs_init(
    ca_dir: CaDir = Path("pki"),
    name: Annotated[str, typer.Option("--name", help="CA common name")] = "VPP pilot CA",
    days: Days = 3650,
) -> None:
    """Create a CA (ca.pem + ca.key, mode 0600) for a pilot."""
    from .certs import init_ca

    issued = init_ca(ca_dir, name=name, days=days)
    typer.echo(f"CA certificate: {issued.cert}\nCA key: {issued.key} (keep it offline)")
    typer.echo(f"valid until {issued.not_after:%Y-%m-%d}; sha256 {issued.fingerprint}")


@certs_app.command("issue-site")
def certs_issue_site(
    site_id: Annotated[str, typer.Argument(help="The site id the certificate names")],
    ca_dir: CaDir = Path("pki"),
    out: Annotated[Path | None, typer.Option("--out", help="Output dir (DIR/sites)")] = None,
    days: Days = 825,
) -> None:
    """Issue a site's client certificate and key (SITE_ID.pem, SITE_ID.key)."""
    from .certs import issue_site

    issued = issue_site(ca_dir, site_id, out_dir=out, days=days)
    typer.echo(f"certificate: {issued.cert}\nkey: {issued.key}")
    typer.echo(f"valid until {issued.not_after:%Y-%m-%d}; sha256 {issued.fingerprint}")


@certs_app.command("issue-server")
def certs_issue_server(
    names: Annotated[
        list[str], typer.Option("--name", help="Host name or IP gateways connect to (repeat)")
    ],
    ca_dir: CaDir = Path("pki"),
    out: Annotated[Path | None, typer.Option("--out", help="Output dir (default DIR)")] = None,
    basename: Annotated[str, typer.Option("--basename", help="File name stem")] = "server",
    days: Days = 825,
) -> None:
    """Issue the headend's server certificate and key (server.pem, server.key)."""
    from .certs import issue_server

    issued = issue_server(ca_dir, names, out_dir=out, basename=basename, days=days)
    typer.echo(f"certificate: {issued.cert}\nkey: {issued.key}")
    typer.echo(f"valid until {issued.not_after:%Y-%m-%d}; sha256 {issued.fingerprint}")


@certs_app.command("fingerprint")
def certs_fingerprint(cert: Annotated[Path, typer.Argument(help="PEM certificate")]) -> None:
    """Print the SHA-256 fingerprint the deny-list uses."""
    from .certs import cert_fingerprint

    typer.echo(cert_fingerprint(cert))


@certs_app.command("revoke")
def certs_revoke(
    what: Annotated[str, typer.Argument(help="A PEM certificate file or its sha256 fingerprint")],
    reason: Annotated[str, typer.Option("--reason")] = "",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    log_level: LogLevel = "WARNING",
    log_format: LogFormat = "text",
) -> None:
    """Put a certificate on the deny-list: its next connect is refused (every replica)."""
    from .certs import cert_fingerprint
    from .db.security_repo import revoke_certificate
    from .tls import normalize_fingerprint

    logging_from(log_level, log_format)
    fp = normalize_fingerprint(what)
    if fp is None:
        try:
            fp = cert_fingerprint(Path(what))
        except (OSError, ValueError) as exc:
            raise CommandError(
                f"{what} is neither a sha256 fingerprint nor a PEM file: {exc}"
            ) from None
    settings = settings_from_env(database_url=database_url, data_dir=data_dir)
    with database(settings, migrate=False) as ready:
        assert ready.database_url is not None
        url = ready.database_url

        async def go() -> bool:
            engine = make_engine(url, pool_size=1)
            try:
                return await revoke_certificate(engine, fp, reason)
            finally:
                await engine.dispose()

        added = asyncio.run(go())
    typer.echo(f"revoked {fp}" if added else f"{fp} was already revoked")


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option("--role", help="operator or viewer")],
    name: Annotated[str, typer.Option("--name", help="Who or what uses it")] = "",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    log_level: LogLevel = "WARNING",
    log_format: LogFormat = "text",
) -> None:
    """Create a token; its value is the last line of output (shown once)."""
    from .auth import ROLES, hash_token, new_token
    from .db.security_repo import insert_token

    if role not in ROLES:
        raise CommandError(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    logging_from(log_level, log_format)
    settings = settings_from_env(database_url=database_url, data_dir=data_dir)
    token_id, token = new_token()
    with database(settings, migrate=False) as ready:
        assert ready.database_url is not None
        url = ready.database_url

        async def go() -> None:
            engine = make_engine(url, pool_size=1)
            try:
                await insert_token(engine, token_id, name, role, hash_token(token))
            finally:
                await engine.dispose()

        asyncio.run(go())
    typer.echo(f"created {role} token {token_id} {name}".rstrip())
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    log_level: LogLevel = "WARNING",
    log_format: LogFormat = "text",
) -> None:
    """List tokens (ids, roles, names; never the secrets)."""
    from .db.security_repo import list_tokens

    logging_from(log_level, log_format)
    settings = settings_from_env(database_url=database_url, data_dir=data_dir)
    with database(settings, migrate=False) as ready:
        assert ready.database_url is not None
        url = ready.database_url

        async def go() -> list[str]:
            engine = make_engine(url, pool_size=1)
            try:
                rows = await list_tokens(engine)
            finally:
                await engine.dispose()
            return [
                f"{r.token_id}  {r.role:<8}  {'revoked' if r.revoked_at else 'active ':<7}  "
                f"{r.created_at:%Y-%m-%d}  {r.name}".rstrip()
                for r in rows
            ]

        lines = asyncio.run(go())
    typer.echo("\n".join(lines) if lines else "no tokens: the REST API is open (rest_auth=auto)")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token id (from `tokens list`)")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    log_level: LogLevel = "WARNING",
    log_format: LogFormat = "text",
) -> None:
    """Revoke a token at once (its next request gets 401)."""
    from .db.security_repo import revoke_token

    logging_from(log_level, log_format)
    settings = settings_from_env(database_url=database_url, data_dir=data_dir)
    with database(settings, migrate=False) as ready:
        assert ready.database_url is not None
        url = ready.database_url

        async def go() -> bool:
            engine = make_engine(url, pool_size=1)
            try:
                return await revoke_token(engine, token_id, datetime.now(UTC))
            finally:
                await engine.dispose()

        done = asyncio.run(go())
    if not done:
        raise CommandError(f"no active token {token_id!r}", 1)
    typer.echo(f"revoked token {token_id}")


__all__ = ["certs_app", "tokens_app"]
