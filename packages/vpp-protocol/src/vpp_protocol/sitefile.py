"""The site file (DESIGN.md §1): one YAML format for the gateway and the headend's registry import.

`load_site_file` parses and validates it; every problem raises `SiteFileError` whose
message names the file, the path inside it (``assets[3].max_kw``), the line where it can
be found, and what is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: A per-asset credential: 1 to 256 printable ASCII characters, no spaces.
CREDENTIAL_PATTERN = re.compile(r"[\x21-\x7e]{1,256}")
SHA256_HEX_PATTERN = re.compile(r"[0-9a-f]{64}")
AssetKindName = Literal["pv", "bess", "meter", "genset", "ev_charger", "load", "other"]
#: Kinds whose power is drawn from the grid: their default bounds are [-capacity, 0].
CONSUMER_KINDS = frozenset({"ev_charger", "load"})
#: Seconds without a working session before the gateway releases every asset (DESIGN.md §3b).
DEFAULT_FAILSAFE_AFTER_S = 900.0


class SiteFileError(ValueError):
    """A site file is unreadable or invalid; the message says where and what."""


class TlsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Gateway TLS toward the headend (paths relative to the site file)."""

    ca: str | None = None  # CA bundle that signs the headend's certificate
    cert: str | None = None  # this site's client certificate (mutual TLS)
    key: str | None = None  # its private key
    server_name: str | None = None  # name to verify in the headend certificate


class HeadendConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Where the gateway connects (gateway only)."""

    host: str = "127.0.0.1"
    port: int = 50051
    tls: TlsConfig | None = None


class GatewayOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Gateway runtime knobs; every field has a default."""

    state_dir: str | None = None  # default: .vpp-gateway/<site_id> beside the site file
    heartbeat_interval_s: float = 15.0
    keepalive_time_s: float = 20.0
    keepalive_timeout_s: float = 10.0
    reconnect_base_s: float = 1.0
    reconnect_cap_s: float = 60.0
    spool_max_bytes: int = 64 * 1024 * 1024
    replay_rate: float = 2000.0  # spooled readings per second at most, on reconnect


class AssetConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One asset of a site."""

    asset_id: str
    kind: AssetKindName
    capacity_kw: float | None = None
    min_kw: float | None = None
    max_kw: float | None = None
    energy_kwh: float | None = None
    # Semi-continuous assets (gensets): off (0) or within [min_stable_kw, max_kw]; 0 = continuous.
    min_stable_kw: float = 0.0
    # Where a setpoint's end, a release or the fail-safe leaves the asset; None = the
    # device's own behaviour (PV uncurtailed, BESS 0, genset off, EV unrestricted).
    fallback_kw: float | None = None
    simulator: dict[str, Any] = msgspec.field(default_factory=dict)
    # Per-asset identity (docs/security.md). The gateway presents `credential` in
    # Register; the headend's registry import stores `credential_sha256` (or the hash of
    # `credential` when only that is given) and then requires it for this asset.
    credential: str | None = None
    credential_sha256: str | None = None

    @property
    def dispatchable(self) -> bool:
        """Meters measure; they take no setpoints and no share of a split."""
        return self.kind != "meter"

    @property
    def bounds(self) -> tuple[float, float]:
        """Effective (min_kw, max_kw): given values, else the kind's default from capacity.

        Defaults: bess [-cap, cap]; ev_charger and load [-cap, 0] (they consume, and
        consumption is negative); meter [0, 0]; others [0, cap]. Unknown capacity and no
        bounds: [0, 0] for a meter, else unbounded.
        """
        cap = self.capacity_kw
        if self.kind == "meter":
            lo, hi = 0.0, 0.0
        elif cap is None:
            lo, hi = -math.inf, math.inf
        elif self.kind == "bess":
            lo, hi = -cap, cap
        elif self.kind in CONSUMER_KINDS:
            lo, hi = -cap, 0.0
        else:
            lo, hi = 0.0, cap
        return (
            self.min_kw if self.min_kw is not None else lo,
            self.max_kw if self.max_kw is not None else hi,
        )


class SiteFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A whole site file."""

    site_id: str
    assets: list[AssetConfig]
    headend: HeadendConfig = msgspec.field(default_factory=HeadendConfig)
    telemetry_interval_s: float = 4.0
    groups: list[str] = msgspec.field(default_factory=list)
    legacy: bool = False
    gateway: GatewayOptions = msgspec.field(default_factory=GatewayOptions)
    # With no working session this long, the gateway releases every asset; 0 = never.
    failsafe_after_s: float = DEFAULT_FAILSAFE_AFTER_S

    def asset(self, asset_id: str) -> AssetConfig | None:
        """The asset with this id, or None."""
        return next((a for a in self.assets if a.asset_id == asset_id), None)


def _problems(site: SiteFile) -> list[tuple[str, str]]:
    """Semantic checks msgspec cannot express, as (path, message) pairs."""
    out: list[tuple[str, str]] = []
    if not ID_PATTERN.fullmatch(site.site_id):
        out.append(("site_id", f"{site.site_id!r} must match [A-Za-z0-9._-]{{1,64}}"))
    if not (math.isfinite(site.telemetry_interval_s) and site.telemetry_interval_s > 0):
        out.append(("telemetry_interval_s", "must be a positive number of seconds"))
    if not (math.isfinite(site.failsafe_after_s) and site.failsafe_after_s >= 0):
        out.append(("failsafe_after_s", "must be a number of seconds >= 0 (0 = off)"))
    if not 0 < site.headend.port < 65536:
        out.append(("headend.port", f"{site.headend.port} is not a TCP port (1-65535)"))
    for i, group in enumerate(site.groups):
        if not ID_PATTERN.fullmatch(group):
            out.append((f"groups[{i}]", f"{group!r} must match [A-Za-z0-9._-]{{1,64}}"))
    g = site.gateway
    for name in (
        "heartbeat_interval_s",
        "keepalive_time_s",
        "keepalive_timeout_s",
        "reconnect_base_s",
        "reconnect_cap_s",
        "replay_rate",
    ):
        value = getattr(g, name)
        if not (math.isfinite(value) and value > 0):
            out.append((f"gateway.{name}", "must be a positive number"))
    if g.spool_max_bytes < 64 * 1024:
        out.append(("gateway.spool_max_bytes", "must be at least 65536"))
    if not site.assets:
        out.append(("assets", "a site needs at least one asset"))
    if site.legacy and len(site.assets) != 1:
        out.append(("assets", f"a legacy site has exactly one asset, not {len(site.assets)}"))
    seen: dict[str, int] = {}
    for i, asset in enumerate(site.assets):
        out += _asset_problems(f"assets[{i}]", asset)
        if asset.asset_id in seen:
            out.append(
                (
                    f"assets[{i}].asset_id",
                    f"duplicate asset_id {asset.asset_id!r} (also assets[{seen[asset.asset_id]}])",
                )
            )
        seen.setdefault(asset.asset_id, i)
    return out


_NON_NEGATIVE = ("capacity_kw", "energy_kwh", "min_stable_kw")


def _asset_problems(path: str, asset: AssetConfig) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not ID_PATTERN.fullmatch(asset.asset_id):
        out.append((f"{path}.asset_id", f"{asset.asset_id!r} must match [A-Za-z0-9._-]{{1,64}}"))
    for name in ("capacity_kw", "min_kw", "max_kw", "energy_kwh", "min_stable_kw", "fallback_kw"):
        value = getattr(asset, name)
        if value is not None and not math.isfinite(value):
            out.append((f"{path}.{name}", f"{value} is not a finite number"))
        elif value is not None and name in _NON_NEGATIVE and value < 0:
            out.append((f"{path}.{name}", f"{value} is negative"))
    if asset.credential is not None and not CREDENTIAL_PATTERN.fullmatch(asset.credential):
        out.append((f"{path}.credential", "must be 1-256 printable ASCII characters, no spaces"))
    if asset.credential_sha256 is not None and not SHA256_HEX_PATTERN.fullmatch(
        asset.credential_sha256
    ):
        out.append((f"{path}.credential_sha256", "must be 64 lower-case hex digits (SHA-256)"))
    if not out:
        lo, hi = asset.bounds
        if lo > hi:
            out.append((f"{path}.min_kw", f"min_kw ({lo}) is greater than max_kw ({hi})"))
        else:
            out += _envelope_problems(path, asset, lo, hi)
    return out


def _envelope_problems(
    path: str, asset: AssetConfig, lo: float, hi: float
) -> list[tuple[str, str]]:
    """min_stable_kw and fallback_kw against the asset's effective bounds [lo, hi]."""
    out: list[tuple[str, str]] = []
    ms, fb = asset.min_stable_kw, asset.fallback_kw
    if ms > hi:
        out.append((f"{path}.min_stable_kw", f"min_stable_kw ({ms}) is greater than max_kw ({hi})"))
    if fb is not None and not lo <= fb <= hi:
        out.append((f"{path}.fallback_kw", f"fallback_kw ({fb}) is outside [{lo}, {hi}]"))
    elif fb is not None and 0 < fb < ms:
        out.append(
            (
                f"{path}.fallback_kw",
                f"fallback_kw ({fb}) is between 0 and min_stable_kw ({ms}): the asset runs "
                f"either off or at {ms} kW or more",
            )
        )
    return out


def _line_of(root: yaml.Node | None, path: str) -> int | None:
    """1-based line of ``path`` (``assets[3].max_kw``) in the composed YAML, if found."""
    node = root
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        if isinstance(node, yaml.MappingNode) and key:
            node = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        elif isinstance(node, yaml.SequenceNode) and index:
            node = node.value[int(index)] if int(index) < len(node.value) else None
        else:
            node = None
        if node is None:
            return None
    return node.start_mark.line + 1 if node is not None else None


def _error(name: str, root: yaml.Node | None, problems: Sequence[tuple[str, str]]) -> SiteFileError:
    lines = []
    for path, msg in problems:
        line = _line_of(root, path) if path else None
        where = f"{name}:{line}" if line else name
        lines.append(f"{where}: {path}: {msg}" if path else f"{where}: {msg}")
    return SiteFileError("\n".join(lines))


def parse_site_file(data: bytes | str, name: str = "<site file>") -> SiteFile:
    """Parse and validate site-file YAML; ``name`` is used in error messages."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        root = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SiteFileError(f"{name}: not valid YAML: {exc}") from None
    try:
        site = msgspec.yaml.decode(raw, type=SiteFile)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        match = re.search(r" - at `\$\.?(.*)`$", msg)
        path = match.group(1) if match else ""
        raise _error(name, root, [(path, msg[: match.start()] if match else msg)]) from None
    except msgspec.DecodeError as exc:
        raise SiteFileError(f"{name}: not a valid site file: {exc}") from None
    problems = _problems(site)
    if problems:
        raise _error(name, root, problems)
    return site


def load_site_file(path: str | Path) -> SiteFile:
    """Read and validate a site file from disk (blocking: call it before the event loop)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise SiteFileError(f"{p}: cannot read: {exc.strerror}") from None
    return parse_site_file(data, str(p))


__all__ = [
    "CREDENTIAL_PATTERN",
    "DEFAULT_FAILSAFE_AFTER_S",
    "ID_PATTERN",
    "AssetConfig",
    "AssetKindName",
    "GatewayOptions",
    "HeadendConfig",
    "SiteFile",
    "SiteFileError",
    "TlsConfig",
    "load_site_file",
    "parse_site_file",
]
