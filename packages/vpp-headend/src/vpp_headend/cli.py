"""The ``vpp-headend`` command: serve, migrate, prune, import site files.

Settings come from the options given, else ``VPP_*`` environment variables (e.g.
``VPP_DATABASE_URL``, ``VPP_HTTP_PORT``, ``VPP_GRPC_PORT``, ``VPP_LOG_FORMAT``), else
defaults. Without a database URL, an embedded PostgreSQL runs in the data directory
(``vpp-headend[embedded]``).

A command that cannot do what it was asked (a port in use, an unreachable database, a
missing file, a bad setting) answers in one line, ``vpp-headend: <what is wrong>``, on
standard error and exits with status 2; only a bug shows a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ._version import __version__
from .cli_options import (
    DatabaseUrl,
    DataDir,
    LogFormat,
    LogLevel,
    database,
    logging_from,
    one_line,
    settings_from_env,
)
from .cli_security import certs_app, tokens_app
from .db.engine import make_engine
from .db.partitions import drop_partitions_before
from .eventloop import loop_factory
from .preflight import check_ports, tls_context
from .registry import Registry
from .rollup import Rolled, Skipped, delete_rollups_before, rollup

log = logging.getLogger("vpp_headend.cli")

PROG = "vpp-headend"


class _HeadendGroup(TyperGroup):
    """The top-level command group: the one place a command's error becomes its answer.

    The headend's own errors (`cli_options.one_line`: the errors.py tree, a bad setting
    or file, a port in use, an unreachable database) are ``vpp-headend: <message>`` on
    stderr and exit status 2, with no traceback; anything else is a bug and propagates
    with its traceback.
    """

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer may vendor click)
        try:
            return super().invoke(ctx)
        except Exception as exc:
            answer = one_line(exc)
            if answer is None:
                raise
            message, code = answer
            typer.echo(f"{PROG}: {message}", err=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=_HeadendGroup,
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    # A bug's traceback without local variables: they hold settings, URLs and tokens.
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema and retention.")
assets_app = typer.Typer(no_args_is_help=True, help="The asset registry.")
app.add_typer(db_app, name="db")
app.add_typer(assets_app, name="assets")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """VPP headend: the REST API, the gRPC agent service and their database."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    http_port: Annotated[
        int | None, typer.Option(help="REST port, 0 = any free port (default 8000)")
    ] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="gRPC port, 0 = any free port (default 50051)")
    ] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    auto_enroll: Annotated[
        bool | None,
        typer.Option(
            "--auto-enroll", help="Dev only: enroll unknown assets to the registering site"
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option("--heartbeat-interval", help="Seconds between heartbeats (default 15)"),
    ] = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Run migrations first (always with embedded)")
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="gRPC server certificate (PEM)")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its private key")] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option("--tls-client-ca", help="CA bundle site certificates must chain to"),
    ] = None,
    insecure: Annotated[
        bool | None,
        typer.Option("--insecure", help="Allow plaintext gRPC on a non-loopback address"),
    ] = None,
    rest_auth: Annotated[
        str | None,
        typer.Option("--rest-auth", help="auto (tokens once one exists) or required"),
    ] = None,
    event_loop: Annotated[
        str | None,
        typer.Option("--loop", help="Event loop: auto (uvloop where installed), uvloop or asyncio"),
    ] = None,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
) -> None:
    """Serve the REST API and the gRPC agent service until SIGINT/SIGTERM."""
    logging_from(log_level, log_format)
    settings = settings_from_env(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        database_url=database_url,
        data_dir=data_dir,
        auto_enroll=auto_enroll,
        heartbeat_interval_s=heartbeat_interval,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        insecure=insecure,
        rest_auth=rest_auth,
        event_loop=event_loop,
    )
    from .serve import run

    factory = loop_factory(settings.event_loop)
    # What can be checked before an embedded database starts or migrations run.
    check_ports(settings)
    tls_context(settings)
    with database(settings, migrate=migrate) as ready, asyncio.Runner(loop_factory=factory) as r:
        started = r.run(run(ready))
    if not started:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
) -> None:
    """Migrate the database schema to the newest revision."""
    logging_from(log_level, log_format)
    settings = settings_from_env(database_url=database_url, data_dir=data_dir)
    with database(settings, migrate=True):
        pass
    typer.echo("database is at the newest schema revision")


@db_app.command("prune")
def db_prune(
    days: Annotated[
        int | None, typer.Option(help="Keep this many days of raw history (default 7)")
    ] = None,
    rollup_days: Annotated[
        int | None,
        typer.Option("--rollup-days", help="Keep this many days of 1-minute rollups (default 400)"),
    ] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
) -> None:
    """Drop whole daily telemetry partitions and delete rollups older than the retention."""
    logging_from(log_level, log_format)
    settings = settings_from_env(
        database_url=database_url,
        data_dir=data_dir,
        retention_days=days,
        rollup_retention_days=rollup_days,
    )
    now = datetime.now(UTC)
    with database(settings, migrate=False) as ready:
        assert ready.database_url is not None
        cutoff = now.date() - timedelta(days=ready.retention_days)
        rollup_cutoff = now - timedelta(days=ready.rollup_retention_days)
        dropped, deleted = asyncio.run(_prune(ready.database_url, cutoff, rollup_cutoff))
    typer.echo(f"dropped {len(dropped)} partition(s) before {cutoff}: {', '.join(dropped) or '-'}")
    typer.echo(f"deleted {deleted} rollup minute(s) before {rollup_cutoff:%Y-%m-%dT%H:%MZ}")


async def _prune(url: str, cutoff: date, rollup_cutoff: datetime) -> tuple[list[str], int]:
    engine = make_engine(url, pool_size=1)
    try:
        dropped = await drop_partitions_before(engine, cutoff)
        return dropped, await delete_rollups_before(engine, rollup_cutoff)
    finally:
        await engine.dispose()


@db_app.command("rollup")
def db_rollup(
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since",
            help="Rebuild every closed minute from this time (ISO, UTC if no offset); "
            "default: what the background job would do now",
            formats=[
                "%Y-%m-%d",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%dT%H:%M:%S%z",
                "%Y-%m-%d %H:%M:%S",
            ],
        ),
    ] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    log_level: LogLevel = "INFO",
    log_format: LogFormat = "text",
) -> None:
    """Roll telemetry up into one-minute rows (telemetry_1m); safe beside running headends."""
    logging_from(log_level, log_format)
    settings = settings_from_env(database_url=database_url, data_dir=data_dir)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with database(settings, migrate=False) as ready:
        assert ready.database_url is not None
        done = asyncio.run(_rollup(ready.database_url, since, ready.rollup_overlap_s))
    if isinstance(done, Rolled):
        typer.echo(
            f"rolled up {done.start:%Y-%m-%dT%H:%MZ} .. {done.end:%Y-%m-%dT%H:%MZ}: "
            f"{done.rows} minute row(s) written"
        )
    else:
        typer.echo(f"nothing rolled up: {done.reason}")


async def _rollup(url: str, since: datetime | None, overlap_s: float) -> Rolled | Skipped:
    engine = make_engine(url, pool_size=1)
    try:
        return await rollup(
            engine, datetime.now(UTC), since=since, overlap=timedelta(seconds=overlap_s), wait=True
        )
    finally:
        await engine.dispose()


@assets_app.command("import")
def assets_import(
    files: Annotated[list[Path], typer.Argument(help="Site files (YAML)", exists=False)],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    log_level: LogLevel = "WARNING",
    log_format: LogFormat = "text",
) -> None:
    """Load sites, assets and groups from site files (idempotent; re-import updates)."""
    from vpp_protocol.sitefile import load_site_file

    logging_from(log_level, log_format)
    sites = [load_site_file(f) for f in files]
    settings = settings_from_env(database_url=database_url, data_dir=data_dir)
    with database(settings, migrate=False) as ready:
        assert ready.database_url is not None
        results = asyncio.run(_import(ready.database_url, sites))
    for r in results:
        verb = "created" if r.created else "updated"
        typer.echo(
            f"{r.site_id}: {verb}, {r.assets_upserted} asset(s), {r.assets_removed} removed, "
            f"groups: {', '.join(r.groups) or '-'}"
        )


async def _import(url: str, sites: list[Any]) -> list[Any]:
    engine = make_engine(url, pool_size=1)
    try:
        registry = Registry(engine)
        return [await registry.import_site(site) for site in sites]
    finally:
        await engine.dispose()


app.add_typer(certs_app, name="certs")
app.add_typer(tokens_app, name="tokens")


def main() -> None:  # pragma: no cover - console entry point alias
    app(prog_name=PROG)


__all__ = ["PROG", "app"]
