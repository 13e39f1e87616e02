"""VPP Edge Gateway headend: REST API and gRPC agent service in one process.

`create_app(settings)` builds the Litestar app whose lifespan runs a `Headend` (database
engine, telemetry ingest, dispatch lifecycle, grpclib server); `Settings` configures it.
The `vpp-headend` command (`vpp_headend.cli`) serves, migrates and imports site files.
"""

from ._version import __version__
from .app import create_app
from .headend import Headend
from .settings import Settings, SettingsError

__all__ = ["Headend", "Settings", "SettingsError", "__version__", "create_app"]
