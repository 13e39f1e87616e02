"""The site file (DESIGN.md §1): one YAML format for the gateway and the headend's registry import.

`load_site_file` parses and validates it. An invalid file raises one `SiteFileError` with
every problem found, each naming the file, the line, the path inside the file
(``assets[3].max_kw``) and what is wrong (the valid values, for a kind), so a user fixes
them all in one go instead of one per run.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

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
    """A site file is unreadable or invalid; the message says where and what, one line per
    problem. ``problems`` holds them one by one (empty when the file could not be read or
    parsed as YAML at all: then the message is the one problem)."""

    def __init__(self, message: str, problems: Sequence[SiteFileProblem] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[SiteFileProblem, ...] = tuple(problems)


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


def _problems(site: SiteFile, bad: Collection[str] = ()) -> list[tuple[str, str]]:
    """Semantic checks msgspec cannot express, as (path, message) pairs.

    ``bad``: paths already reported (a placeholder stands in for them); the checks that
    would judge a placeholder are skipped.
    """
    out: list[tuple[str, str]] = []
    if "site_id" not in bad and not ID_PATTERN.fullmatch(site.site_id):
        out.append(("site_id", f"{site.site_id!r} must match [A-Za-z0-9._-]{{1,64}}"))
    if not (math.isfinite(site.telemetry_interval_s) and site.telemetry_interval_s > 0):
        out.append(("telemetry_interval_s", "must be a positive number of seconds"))
    if not (math.isfinite(site.failsafe_after_s) and site.failsafe_after_s >= 0):
        out.append(("failsafe_after_s", "must be a number of seconds >= 0 (0 = off)"))
    if not 0 < site.headend.port < 65536:
        out.append(("headend.port", f"{site.headend.port} is not a TCP port (1-65535)"))
    for i, group in enumerate(site.groups):
        if f"groups[{i}]" not in bad and not ID_PATTERN.fullmatch(group):
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
    if "assets" not in bad and not site.assets:
        out.append(("assets", "a site needs at least one asset"))
    if "assets" not in bad and site.legacy and len(site.assets) != 1:
        out.append(("assets", f"a legacy site has exactly one asset, not {len(site.assets)}"))
    seen: dict[str, int] = {}
    for i, asset in enumerate(site.assets):
        path = f"assets[{i}]"
        if path in bad:  # not a mapping at all
            continue
        spoilt = {b[len(path) + 1 :] for b in bad if b.startswith(path + ".")}
        out += _asset_problems(path, asset, spoilt)
        if "asset_id" in spoilt:
            continue
        if asset.asset_id in seen:
            out.append(
                (
                    f"{path}.asset_id",
                    f"duplicate asset_id {asset.asset_id!r} (also assets[{seen[asset.asset_id]}])",
                )
            )
        seen.setdefault(asset.asset_id, i)
    return out


_NON_NEGATIVE = ("capacity_kw", "energy_kwh", "min_stable_kw")


def _asset_problems(
    path: str, asset: AssetConfig, spoilt: Collection[str] = ()
) -> list[tuple[str, str]]:
    """``spoilt``: the asset's fields already reported; with any, the bounds are not judged
    (they depend on kind, capacity and limits together)."""
    out: list[tuple[str, str]] = []
    if "asset_id" not in spoilt and not ID_PATTERN.fullmatch(asset.asset_id):
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
    if not out and not spoilt:
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


# -- reading: every problem of a file at once, each with its line ------------------------
@dataclass(frozen=True, slots=True)
class SiteFileProblem:
    """One problem of a site file: where it is (path inside the file, 1-based line) and what.

    ``path`` is ``assets[3].max_kw``-style, empty for the file as a whole; ``line`` is the
    line of the key (of the item, for a list entry; of the enclosing mapping, for a missing
    key), None when the file has no such place.
    """

    path: str
    line: int | None
    message: str

    def render(self, name: str) -> str:
        """``name:line: path: message``, the form compilers use (editors jump to it)."""
        where = f"{name}:{self.line}" if self.line else name
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def _kinds_text(values: Sequence[object]) -> str:
    return ", ".join(str(v) for v in values)


_JSON_KIND = {dict: "object", list: "array", str: "str", int: "int", float: "float", bool: "bool"}
#: Values that stand in for a missing or invalid required field so that the rest of the file
#: can still be checked; the checks that would judge the stand-in are skipped.
_PLACEHOLDERS: dict[str, Any] = {"site_id": "", "assets": [], "asset_id": "", "kind": "other"}
_LAST_STEP = re.compile(r"(^|\.)[^.\[\]]+$|\[\d+\]$")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_KIND.get(type(value), type(value).__name__)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _struct_type(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct in ``S`` or ``S | None``; None for any other type."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    if isinstance(tp, types.UnionType) or get_origin(tp) is Union:
        structs = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        return structs[0] if len(structs) == 1 else None
    return None


class _Reader:
    """Validates constructed YAML against the `SiteFile` structs without stopping at the
    first problem: an invalid optional value takes its default and a missing or invalid
    required one a placeholder (its path is in ``bad``), so every other part is still
    checked, semantically too."""

    def __init__(self, lines: dict[str, int]) -> None:
        self.lines = lines
        self.problems: list[SiteFileProblem] = []
        self.bad: set[str] = set()

    def add(self, path: str, message: str, line: int | None = None) -> None:
        self.problems.append(SiteFileProblem(path, line or self.line(path), message))
        self.bad.add(path)

    def line(self, path: str) -> int | None:
        """The line of ``path``, else of the nearest enclosing part the file has."""
        while path not in self.lines and path:
            path = _LAST_STEP.sub("", path)
        return self.lines.get(path)

    def struct(self, value: object, cls: type[msgspec.Struct], path: str) -> Any:
        """An instance of ``cls`` from a mapping (problems recorded), None for a non-mapping."""
        if not isinstance(value, dict):
            self.add(path, f"Expected `object`, got `{_type_name(value)}`")
            return None
        fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, item in value.items():
            sub = _join(path, key)
            info = fields.get(key) if isinstance(key, str) else None
            if info is None:
                self.add(sub, _unknown_field(key, list(fields)))
                continue
            ok, converted = self.value(item, info.type, sub)
            if ok:
                kwargs[info.name] = converted
        for info in fields.values():
            if info.required and info.name not in kwargs:
                sub = _join(path, info.encode_name)
                if info.encode_name not in value:
                    hint = _choices(info.type)
                    self.add(
                        sub,
                        f"missing required field `{info.encode_name}`"
                        + (f" (one of {hint})" if hint else ""),
                    )
                kwargs[info.name] = _PLACEHOLDERS[info.name]
        return cls(**kwargs)

    def value(self, item: object, tp: Any, path: str) -> tuple[bool, Any]:
        """(True, the value converted to ``tp``) or (False, None) with the problem recorded."""
        struct = _struct_type(tp)
        if struct is not None:
            if item is None and struct is not tp:  # `S | None`
                return True, None
            made = self.struct(item, struct, path)
            return made is not None, made
        if get_origin(tp) is list and (inner := _struct_type(get_args(tp)[0])) is not None:
            if not isinstance(item, list):
                self.add(path, f"Expected `array`, got `{_type_name(item)}`")
                return False, None
            out = []
            for i, entry in enumerate(item):
                made = self.struct(entry, inner, f"{path}[{i}]")
                # keep the indexes of the file: a placeholder for an entry that is not a mapping
                out.append(made if made is not None else inner(**_placeholders(inner)))
            return True, out
        if get_origin(tp) is list:
            return self.scalars(item, get_args(tp)[0], path)
        if get_origin(tp) is Literal:
            if isinstance(item, str) and item in get_args(tp):
                return True, item
            name = path.rpartition(".")[2]
            self.add(path, f"{item!r} is not a valid {name}: must be one of {_choices(tp)}")
            return False, None
        try:
            return True, msgspec.convert(item, tp, strict=True, builtin_types=(datetime, date))
        except msgspec.ValidationError as exc:
            msg = str(exc)
            match = re.search(r" - at `\$(.*)`$", msg)
            where = path + match.group(1).replace("[...]", "") if match else path
            self.add(where, msg[: match.start()] if match else msg)
            return False, None

    def scalars(self, item: object, tp: Any, path: str) -> tuple[bool, Any]:
        """A list checked entry by entry; an invalid entry becomes "" (its path in ``bad``)."""
        if not isinstance(item, list):
            self.add(path, f"Expected `array`, got `{_type_name(item)}`")
            return False, None
        out = []
        for i, entry in enumerate(item):
            ok, converted = self.value(entry, tp, f"{path}[{i}]")
            out.append(converted if ok else "")
        return True, out


def _placeholders(cls: type[msgspec.Struct]) -> dict[str, Any]:
    return {f.name: _PLACEHOLDERS[f.name] for f in msgspec.structs.fields(cls) if f.required}


def _choices(tp: Any) -> str:
    return _kinds_text(get_args(tp)) if get_origin(tp) is Literal else ""


def _unknown_field(key: object, known: list[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"unknown field `{key}`; did you mean `{close[0]}`?"
    return f"unknown field `{key}`; expected one of: {', '.join(known)}"


def _walk(root: yaml.Node | None) -> tuple[dict[str, int], list[tuple[str, int, int]]]:
    """(1-based line of every path in the composed YAML, duplicate keys as (path, line,
    line of the first)). Walked before construction: merge keys (``<<``) are not expanded
    yet, so a merged-in key is not taken for a duplicate (it has no line of its own)."""
    lines: dict[str, int] = {}
    dups: list[tuple[str, int, int]] = []
    on_path: set[int] = set()  # an alias may point back at an enclosing node

    def walk(node: yaml.Node, path: str) -> None:
        if id(node) in on_path:
            return
        on_path.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                sub = _join(path, key_node.value)
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    dups.append((sub, line, first[key_node.value]))
                first.setdefault(key_node.value, line)
                lines[sub] = line
                walk(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = f"{path}[{i}]"
                lines[sub] = item.start_mark.line + 1
                walk(item, sub)
        on_path.discard(id(node))

    if root is not None:
        lines[""] = root.start_mark.line + 1
        walk(root, "")
    return lines, dups


def _compose(raw: bytes, name: str) -> tuple[object, dict[str, int], list[tuple[str, int, int]]]:
    """(the constructed document, its line map, duplicate keys); `SiteFileError` if not YAML."""
    loader = yaml.SafeLoader(raw)
    try:
        root = loader.get_single_node()
        lines, dups = _walk(root)
        doc = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        what = str(exc.problem or exc.context)
        if exc.context and exc.problem:
            started = exc.context_mark
            since = f" started on line {started.line + 1}" if started else ""
            what += f" ({exc.context}{since})"
        raise SiteFileError(f"{where}: not valid YAML: {what}") from None
    except (yaml.YAMLError, ValueError, LookupError, AttributeError, RecursionError) as exc:
        raise SiteFileError(f"{name}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return doc, lines, dups


def _natural(path: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", path)]


def _error(name: str, problems: Sequence[SiteFileProblem]) -> SiteFileError:
    # by line; on one line by path, numbers as numbers (groups[2] after groups[1])
    ordered = sorted(problems, key=lambda p: (p.line or 0, _natural(p.path)))
    return SiteFileError("\n".join(p.render(name) for p in ordered), ordered)


def parse_site_file(data: bytes | str, name: str = "<site file>") -> SiteFile:
    """Parse and validate site-file YAML; ``name`` is used in error messages.

    Every problem is reported at once (`SiteFileError.problems`, in line order): unknown
    and missing keys, wrong types, values outside their range, duplicate ids.
    """
    raw = data.encode() if isinstance(data, str) else data
    doc, lines, dups = _compose(raw, name)
    if doc is None:
        raise SiteFileError(f"{name}: the file is empty: a site file needs site_id and assets")
    reader = _Reader(lines)
    for path, line, first in dups:
        reader.add(path, f"duplicate key (also on line {first}): YAML keeps only the last", line)
    site = reader.struct(doc, SiteFile, "")
    if site is not None:
        for path, msg in _problems(site, reader.bad):
            reader.add(path, msg)
    if reader.problems:
        raise _error(name, reader.problems)
    assert isinstance(site, SiteFile)
    return site


def site_file_lines(data: bytes | str) -> dict[str, int]:
    """The 1-based line of every path of a site file (``assets[2].simulator``; ``""`` for
    the document), for a program that finds a problem the file format does not know of
    (a simulator parameter, say) and wants to point at it; empty when it is not YAML."""
    raw = data.encode() if isinstance(data, str) else data
    loader = yaml.SafeLoader(raw)
    try:
        return _walk(loader.get_single_node())[0]
    except (yaml.YAMLError, ValueError, LookupError, AttributeError, RecursionError):
        return {}
    finally:
        loader.dispose()


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
    "SiteFileProblem",
    "TlsConfig",
    "load_site_file",
    "parse_site_file",
    "site_file_lines",
]
