"""`GatewaySettings`: every knob of the agent, built once at the entry point and passed in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from vpp_protocol.sitefile import DEFAULT_FAILSAFE_AFTER_S, ID_PATTERN, AssetConfig, SiteFile


class SettingsError(ValueError):
    """An override or combination of settings is invalid; the message says which and why."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS toward the headend; paths are absolute."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Validated, immutable settings of one gateway process."""

    site_id: str
    assets: tuple[AssetConfig, ...]
    state_dir: Path
    groups: tuple[str, ...] = ()
    legacy: bool = False
    headend_host: str = "127.0.0.1"
    headend_port: int = 50051
    tls: TlsSettings | None = None
    tick_s: float = 4.0
    heartbeat_s: float = 15.0
    keepalive_time_s: float = 20.0
    keepalive_timeout_s: float = 10.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    #: A session that stayed up this long resets the backoff to its base.
    stable_after_s: float = 30.0
    register_timeout_s: float = 10.0
    spool_max_bytes: int = 64 * 1024 * 1024
    replay_rate: float = 2000.0
    #: Setpoints without ``expires_at`` stay in the journal this long.
    journal_retention_s: float = 24 * 3600.0
    #: How often per-asset rates and the spool depth are logged.
    stats_interval_s: float = 60.0
    #: Base seed of the simulated devices (each asset derives its own from it).
    seed: int = 0
    device_timeout_s: float = field(default=0.0)
    #: With no working session this long, every asset is released (DESIGN.md §3b); 0 = off.
    failsafe_after_s: float = DEFAULT_FAILSAFE_AFTER_S
    #: The site file these settings came from, as given (named in what to do when the
    #: headend does not know the site); None when built otherwise.
    site_file: Path | None = None

    def __post_init__(self) -> None:
        if not ID_PATTERN.fullmatch(self.site_id):
            raise SettingsError(f"site_id {self.site_id!r} must match [A-Za-z0-9._-]{{1,64}}")
        if not self.assets:
            raise SettingsError("a gateway needs at least one asset")
        if self.legacy and len(self.assets) != 1:
            raise SettingsError("legacy mode serves exactly one asset")
        ids = [a.asset_id for a in self.assets]
        if len(set(ids)) != len(ids):
            raise SettingsError("asset ids must be unique")
        for name in (
            "tick_s",
            "heartbeat_s",
            "keepalive_time_s",
            "keepalive_timeout_s",
            "backoff_base_s",
            "backoff_cap_s",
            "stable_after_s",
            "register_timeout_s",
            "replay_rate",
            "journal_retention_s",
            "stats_interval_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(f"{name} must be a positive number, not {value}")
        if self.backoff_cap_s < self.backoff_base_s:
            raise SettingsError("backoff_cap_s must be >= backoff_base_s")
        if not 0 < self.headend_port < 65536:
            raise SettingsError(f"headend port {self.headend_port} is not a TCP port")
        if self.spool_max_bytes < 64 * 1024:
            raise SettingsError("spool_max_bytes must be at least 65536")
        if not (math.isfinite(self.device_timeout_s) and self.device_timeout_s >= 0):
            raise SettingsError("device_timeout_s must be >= 0 (0 = half a tick)")
        if not (math.isfinite(self.failsafe_after_s) and self.failsafe_after_s >= 0):
            raise SettingsError(
                f"failsafe_after_s must be a number of seconds >= 0 (0 = off), "
                f"not {self.failsafe_after_s}"
            )

    @property
    def device_timeout(self) -> float:
        """Seconds a device read or write may take before it counts as failed."""
        return self.device_timeout_s or self.tick_s / 2

    @property
    def retain_sent_s(self) -> float:
        """How long readings already sent stay in the spool, in case the link was half-dead.

        A dead peer is noticed after at most three heartbeat intervals or one keepalive
        round; readings sent in that window may be lost and are replayed from the spool
        above the headend's watermark.
        """
        return 3 * self.heartbeat_s + self.keepalive_time_s + self.keepalive_timeout_s + self.tick_s

    @property
    def dead_link_s(self) -> float:
        """The longest a dead link goes unnoticed: 3 heartbeats, or a keepalive round."""
        return max(3 * self.heartbeat_s, self.keepalive_time_s + self.keepalive_timeout_s)


def failsafe_warnings(settings: GatewaySettings) -> list[str]:
    """What `vpp-gateway check` warns about ``failsafe_after_s`` (empty: nothing).

    Off (0): assets hold their last setpoint however long the headend is gone. Shorter than
    3 × the time a dead link takes to notice: an ordinary blip (noticed, then a reconnect
    with backoff) would release every asset.
    """
    after = settings.failsafe_after_s
    if after == 0:
        return [
            "failsafe_after_s: 0 turns the fail-safe off: every asset keeps its last setpoint "
            "however long the headend is unreachable"
        ]
    floor = 3 * settings.dead_link_s
    if after < floor:
        return [
            f"failsafe_after_s {after:g} s is below 3 x the time a dead link takes to notice "
            f"({settings.dead_link_s:g} s: 3 heartbeats of {settings.heartbeat_s:g} s, or "
            f"keepalive {settings.keepalive_time_s:g} + {settings.keepalive_timeout_s:g} s): "
            f"a brief outage would release every asset; use at least {floor:g} s"
        ]
    return []


def parse_headend(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:50051`` for IPv6) → (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"--headend {text!r}: expected HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"--headend {text!r}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise SettingsError(f"--headend {text!r}: port {port} is not a TCP port (1-65535)")
    return host, port


def from_site_file(
    site: SiteFile,
    site_path: Path,
    *,
    headend: str | None = None,
    state_dir: Path | None = None,
    tick_s: float | None = None,
    seed: int | None = None,
) -> GatewaySettings:
    """Settings from a validated site file plus command-line overrides."""
    base = site_path.resolve().parent
    opts = site.gateway
    if headend:
        host, port = parse_headend(headend)
    else:
        host, port = site.headend.host, site.headend.port
    tls = None
    if site.headend.tls is not None:
        t = site.headend.tls
        tls = TlsSettings(
            ca=base / t.ca if t.ca else None,
            cert=base / t.cert if t.cert else None,
            key=base / t.key if t.key else None,
            server_name=t.server_name,
        )
    if state_dir is None:
        state_dir = (
            (base / opts.state_dir) if opts.state_dir else base / ".vpp-gateway" / site.site_id
        )
    return GatewaySettings(
        site_id=site.site_id,
        assets=tuple(site.assets),
        state_dir=state_dir,
        groups=tuple(site.groups),
        legacy=site.legacy,
        headend_host=host,
        headend_port=port,
        tls=tls,
        tick_s=tick_s if tick_s is not None else site.telemetry_interval_s,
        heartbeat_s=opts.heartbeat_interval_s,
        keepalive_time_s=opts.keepalive_time_s,
        keepalive_timeout_s=opts.keepalive_timeout_s,
        backoff_base_s=opts.reconnect_base_s,
        backoff_cap_s=opts.reconnect_cap_s,
        spool_max_bytes=opts.spool_max_bytes,
        replay_rate=opts.replay_rate,
        seed=seed if seed is not None else 0,
        failsafe_after_s=site.failsafe_after_s,
        site_file=site_path,
    )
