"""The settings of one harness run, validated once."""

from __future__ import annotations

from dataclasses import dataclass

from .calls import CLIENTS


@dataclass(frozen=True)
class LoadConfig:
    """One run of the harness."""

    gateways: int = 100
    assets: int = 10
    cadence_s: float = 4.0
    duration_s: float = 20.0
    dispatch_rate: float = 2.0  # dispatches per second over REST, 0 = none
    replicas: int = 1
    client_procs: int = 2
    connect_rate: float = 500.0  # new connections per second, all clients together
    connect_timeout_s: float = 300.0
    lag_poll_s: float = 0.1
    probe_assets: int = 50
    host: str = "127.0.0.1"
    client: str = "raw"  # the simulated gateways' gRPC client: "raw" or "grpclib"
    # One more headend process that holds no gateway streams and takes all REST traffic
    # (dispatch POST/GET): the control plane off the telemetry loops (DESIGN.md §7).
    control_replica: bool = False
    # The operator console under load: the fleet page once a second and one browser's
    # /events stream (tools/loadgen/console.py).
    console: bool = False

    def __post_init__(self) -> None:
        if self.gateways < 1 or self.assets < 1 or self.replicas < 1 or self.client_procs < 1:
            raise ValueError("gateways, assets, replicas and client_procs must be >= 1")
        if self.cadence_s <= 0 or self.duration_s <= 0 or self.dispatch_rate < 0:
            raise ValueError("cadence and duration must be > 0, dispatch rate >= 0")
        if self.client not in CLIENTS:
            raise ValueError(f"client must be one of {sorted(CLIENTS)}, not {self.client!r}")
