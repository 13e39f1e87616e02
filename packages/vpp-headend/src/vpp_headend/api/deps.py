"""Dependencies the controllers receive by name: each controller takes the service it
uses (`app.dependencies` provides them from the running headend)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, TypeAlias, runtime_checkable

from litestar.di import NamedDependency

from ..dispatch import DispatchService
from ..events import EventFeed
from ..gateways import GatewayService
from ..metrics import Metrics
from ..registry import Registry
from ..settings import Settings
from ..telemetry_queries import TelemetryQueries


@runtime_checkable  # Litestar checks an injected value against its annotation
class Process(Protocol):
    """What the operations endpoints read of the headend as a whole."""

    @property
    def grpc_port(self) -> int: ...

    @property
    def metrics(self) -> Metrics: ...

    async def ready(self) -> list[str]: ...


#: The process as a whole (readiness, metrics), injected as ``headend``.
HeadendDep: TypeAlias = NamedDependency[Process]
DispatchDep: TypeAlias = NamedDependency[DispatchService]  # as ``dispatch``
GatewaysDep: TypeAlias = NamedDependency[GatewayService]  # as ``gateways``
RegistryDep: TypeAlias = NamedDependency[Registry]  # as ``registry``
TelemetryDep: TypeAlias = NamedDependency[TelemetryQueries]  # as ``telemetry``
SettingsDep: TypeAlias = NamedDependency[Settings]  # as ``settings``
EventsDep: TypeAlias = NamedDependency[EventFeed]  # as ``events``
#: The headend clock's reading for this request, injected as ``now``.
NowDep: TypeAlias = NamedDependency[datetime]
