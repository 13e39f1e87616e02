"""The ``vpp-gateway`` command: run, check, simulate, status.

Every option of ``run`` (and the site file) can also come from the environment,
``VPP_GATEWAY_<OPTION>`` (``--state-dir`` → ``VPP_GATEWAY_STATE_DIR``), as the headend's
settings come from ``VPP_<NAME>``: a container or a systemd unit sets them once. A bad
argument or option is one line naming it and exit 2, like a bad site file.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from vpp_protocol.sitefile import SiteFile, SiteFileError, load_site_file, site_file_lines

from . import log as logmod
from ._version import __version__
from .agent import Agent
from .clock import ManualClock, SystemClock
from .devices import DeviceFactory, Measurement, SimParamError, simulated_device
from .probe import probe_headend
from .registration import Registration, check_base_url, site_registration
from .runtime import AssetFleet, AssetRuntime
from .settings import GatewaySettings, SettingsError, failsafe_warnings, from_site_file
from .status import read_status, render

try:  # the click that typer runs on: its own copy in recent typer, else click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

#: Prefix of the environment variables that stand in for options.
ENV_PREFIX = "VPP_GATEWAY_"


class LogLevel(StrEnum):
    """``--log-level``: the least level written."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    """``--log-format``: key=value lines for people, or JSON lines for Loki / ELK
    (`vpp_protocol.logfmt`, the headend's format too)."""

    text = "text"
    json = "json"


class OneLineErrors(TyperGroup):
    """Usage errors (unknown option, bad value, missing argument) as one ``error:`` line
    naming the option and where help is, exit 2, instead of a usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
            code = rv if isinstance(rv, int) else 0
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()
            code = exc.exit_code
        except click_errors.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "vpp-gateway"
            typer.echo(f"error: {where}: {exc.format_message()} (see {where} --help)", err=True)
            code = 2
        except click_errors.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="vpp-gateway",
    help="VPP Edge Gateway on-site agent: connects a site's assets to the headend.",
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SiteArg = Annotated[
    Path,
    typer.Argument(
        help="The site file (YAML).", show_default=False, envvar=f"{ENV_PREFIX}SITE_FILE"
    ),
]
HeadendOpt = Annotated[
    str | None,
    typer.Option(
        "--headend",
        help="HOST:PORT of the headend, instead of the site file's.",
        envvar=f"{ENV_PREFIX}HEADEND",
    ),
]
StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="State directory (default: from the site file).",
        envvar=f"{ENV_PREFIX}STATE_DIR",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    for line in message.splitlines() or [""]:
        typer.echo(line if line.startswith("error: ") else f"error: {line}", err=True)
    return typer.Exit(code)


def _load(path: Path, **overrides: object) -> tuple[SiteFile, GatewaySettings]:
    try:
        site = load_site_file(path)
        settings = from_site_file(site, path, **overrides)  # type: ignore[arg-type]
    except SiteFileError as exc:
        count = len(exc.problems)
        summary = f"\n{path}: {count} problems" if count > 1 else ""
        raise _fail(f"{exc}{summary}") from None
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    return site, settings


def _factory(spec: str | None) -> DeviceFactory:
    if not spec:
        return simulated_device
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name or "make_device")
    except (ImportError, AttributeError) as exc:
        raise _fail(f"error: --devices {spec!r}: {exc}") from None
    if not callable(factory):
        raise _fail(f"error: --devices {spec!r} is not callable")
    return factory  # type: ignore[no-any-return]


@app.command()
def run(
    site_file: SiteArg,
    headend: HeadendOpt = None,
    state_dir: StateOpt = None,
    tick: Annotated[
        float | None,
        typer.Option(help="Telemetry interval in seconds.", envvar=f"{ENV_PREFIX}TICK"),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            help="Device factory MODULE:NAME for real drivers (default: bundled simulators).",
            envvar=f"{ENV_PREFIX}DEVICES",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the simulated devices.", envvar=f"{ENV_PREFIX}SEED")
    ] = 0,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            help="Least level logged.", envvar=f"{ENV_PREFIX}LOG_LEVEL", case_sensitive=False
        ),
    ] = LogLevel.info,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            help="text: key=value lines; json: one JSON object per line.",
            envvar=f"{ENV_PREFIX}LOG_FORMAT",
            case_sensitive=False,
        ),
    ] = LogFormat.text,
) -> None:
    """Run the agent: connect to the headend, send telemetry, apply setpoints."""
    _, settings = _load(site_file, headend=headend, state_dir=state_dir, tick_s=tick, seed=seed)
    factory = _factory(devices)
    logmod.configure(log_level.value, fmt="json" if log_format is LogFormat.json else "text")

    async def main() -> None:
        agent = Agent(settings, device_factory=factory)
        try:
            await agent.start()
        except (SimParamError, ValueError, OSError) as exc:
            raise _fail(f"error: {exc}") from None
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(agent.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await agent.stop()
        if waiter.done() and not waiter.cancelled() and waiter.exception():
            raise waiter.exception()  # type: ignore[misc]

    asyncio.run(main())


@app.command()
def check(
    site_file: SiteArg,
    headend: HeadendOpt = None,
    headend_url: Annotated[
        str | None,
        typer.Option(
            "--headend-url",
            help="The headend's REST API (e.g. http://HOST:8000): also check that the "
            "site is registered there.",
            envvar=f"{ENV_PREFIX}HEADEND_URL",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="A viewer token for --headend-url, when the headend's REST API needs one.",
            envvar=f"{ENV_PREFIX}TOKEN",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the headend.")] = 5.0,
    offline: Annotated[
        bool, typer.Option("--offline", help="Only validate the file; do not contact the headend.")
    ] = False,
) -> None:
    """Validate the site file, test the connection to the headend and (with --headend-url)
    whether the headend knows the site. Never registers: a running gateway is not disturbed."""
    if headend_url is not None:
        try:
            check_base_url(headend_url)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    site, settings = _load(site_file, headend=headend)
    sim_problems = _simulator_problems(site_file, settings)
    if sim_problems:
        raise _fail("\n".join(sim_problems))
    typer.echo(
        f"ok: {site_file}: site {site.site_id}, {len(site.assets)} asset(s)"
        + (", legacy single-asset mode" if site.legacy else "")
    )
    for warning in failsafe_warnings(settings):  # worth knowing; not an error
        typer.echo(f"warning: {site_file}: {warning}", err=True)
    if offline:
        typer.echo("not checked: the headend connection and the registration (--offline)")
        return
    where = f"{settings.headend_host}:{settings.headend_port}"
    problem, registration = asyncio.run(_reach(settings, headend_url, token, timeout))
    failed = False
    if problem:
        typer.echo(f"error: headend {where}: {problem}", err=True)
        failed = True
    else:
        typer.echo(f"ok: headend {where} answers {'with TLS' if settings.tls else 'without TLS'}")
    failed = _report_registration(site, site_file, registration) or failed
    if failed:
        raise typer.Exit(1)


def _simulator_problems(path: Path, settings: GatewaySettings) -> list[str]:
    """What the bundled simulators refuse in the file's ``simulator:`` sections, every one,
    each with its line (the file format leaves those parameters to the devices)."""
    out: list[str] = []
    lines: dict[str, int] | None = None
    for i, asset in enumerate(settings.assets):
        try:
            simulated_device(asset, SystemClock(), 0)
        except SimParamError as exc:
            if lines is None:
                lines = site_file_lines(path.read_bytes())
            where = f"assets[{i}].simulator"
            line = lines.get(where) or lines.get(f"assets[{i}]")
            out.append(f"{path}:{line}: {where}: {exc}" if line else f"{path}: {where}: {exc}")
    return out


async def _reach(
    settings: GatewaySettings, headend_url: str | None, token: str | None, timeout: float
) -> tuple[str | None, Registration | None]:
    """(what is wrong with the gRPC port or None, the registration or None without a URL),
    both asked at once."""
    probe = probe_headend(settings, timeout)
    if headend_url is None:
        return await probe, None
    ask = site_registration(headend_url, settings.site_id, token=token, timeout=timeout)
    problem, registration = await asyncio.gather(probe, ask)
    return problem, registration


def _report_registration(site: SiteFile, path: Path, reg: Registration | None) -> bool:
    """Print what the registry says of the site; True when that makes the check fail."""
    if reg is None:
        typer.echo(
            f"not checked: whether site {site.site_id} is registered on the headend "
            "(give --headend-url http://HOST:8000, its REST API, to check)"
        )
        return False
    if reg.state == "not_checked":
        typer.echo(
            f"error: not checked whether site {site.site_id} is registered: {reg.detail}",
            err=True,
        )
        return True
    if reg.state == "not_registered":
        typer.echo(
            f"error: site {site.site_id} is not registered on the headend ({reg.url} is 404): "
            f"the headend rejects its gateway; on the headend, run: "
            f"vpp-headend assets import {path}",
            err=True,
        )
        return True
    typer.echo(f"ok: site {site.site_id} is registered, {len(reg.asset_ids)} asset(s)")
    mine = {a.asset_id for a in site.assets}
    missing, extra = sorted(mine - reg.asset_ids), sorted(reg.asset_ids - mine)
    if missing:
        typer.echo(
            f"warning: not in the headend's registry: {', '.join(missing)}: the headend "
            f"rejects them (unknown_asset); re-import: vpp-headend assets import {path}",
            err=True,
        )
    if extra:
        typer.echo(
            f"warning: registered for site {site.site_id} but not in {path}: "
            f"{', '.join(extra)}: they will show as offline",
            err=True,
        )
    return False


@app.command()
def simulate(
    site_file: SiteArg,
    ticks: Annotated[int, typer.Option(help="Ticks to print (0 = until Ctrl-C).")] = 10,
    interval: Annotated[float | None, typer.Option(help="Seconds between ticks.")] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="Simulated time: advance the clock without waiting.")
    ] = False,
    start: Annotated[
        str | None, typer.Option(help="Start time (ISO 8601, UTC) with --fast; default now.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated devices.")] = 0,
    setpoint: Annotated[
        list[str] | None,
        typer.Option(help="ASSET_ID=KW applied before the first tick (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per reading.")] = False,
) -> None:
    """Print simulated telemetry of the site's assets locally, without a headend."""
    _site, settings = _load(site_file, tick_s=interval, seed=seed)
    clock = _sim_clock(fast, start)
    try:
        fleet = AssetFleet.build(settings.assets, simulated_device, clock, settings.seed, {})
    except SimParamError as exc:
        raise _fail(f"{site_file}: {exc}") from None
    wanted = _sim_setpoints(fleet, setpoint or [])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_simulate(fleet, clock, wanted, ticks, settings.tick_s, as_json))


def _sim_clock(fast: bool, start: str | None) -> ManualClock | SystemClock:
    if not fast:
        return SystemClock()
    try:
        t0 = datetime.fromisoformat(start).astimezone(UTC) if start else datetime.now(UTC)
    except ValueError:
        raise _fail(f"error: --start {start!r} is not an ISO 8601 time") from None
    return ManualClock(t0)


def _sim_setpoints(fleet: AssetFleet, items: list[str]) -> dict[str, float]:
    """``--setpoint ASSET_ID=KW`` values, by asset."""
    wanted: dict[str, float] = {}
    for item in items:
        asset_id, _, kw = item.partition("=")
        if fleet.get(asset_id) is None:
            raise _fail(f"error: --setpoint {item!r}: unknown asset {asset_id!r}")
        try:
            wanted[asset_id] = float(kw)
        except ValueError:
            raise _fail(f"error: --setpoint {item!r}: {kw!r} is not a number") from None
    return wanted


async def _simulate(
    fleet: AssetFleet,
    clock: ManualClock | SystemClock,
    wanted: dict[str, float],
    ticks: int,
    tick_s: float,
    as_json: bool,
) -> None:
    for asset_id, kw in wanted.items():
        a = fleet[asset_id]
        a.setpoint_kw = await a.device.apply(a.limits.clamp(kw))
    if not as_json:
        typer.echo(
            f"{'time (UTC)':<20} {'asset':<24} {'kind':<10} {'power_kw':>10} "
            f"{'soc_pct':>8} {'setpoint':>9} status"
        )
    n = 0
    while ticks == 0 or n < ticks:
        n += 1
        now = clock.now()
        for a in fleet:
            m = await a.device.read()
            typer.echo(_sim_json(a, m, now, n) if as_json else _sim_line(a, m, now))
        if isinstance(clock, ManualClock):
            clock.advance(tick_s)
        else:
            await asyncio.sleep(tick_s)


def _sim_json(a: AssetRuntime, m: Measurement, now: datetime, seq: int) -> str:
    return json.dumps(
        {
            "ts": now.isoformat(),
            "asset_id": a.asset_id,
            "seq": seq,
            "power_kw": round(m.power_kw, 4),
            "soc_pct": m.soc_pct,
            "setpoint_kw": a.setpoint_kw,
            "status": m.status.value,
        }
    )


def _sim_line(a: AssetRuntime, m: Measurement, now: datetime) -> str:
    soc = f"{m.soc_pct:8.2f}" if m.soc_pct is not None else f"{'-':>8}"
    sp = f"{a.setpoint_kw:9.2f}" if a.setpoint_kw is not None else f"{'-':>9}"
    return (
        f"{now:%Y-%m-%dT%H:%M:%S}  {a.asset_id:<24} {a.config.kind:<10} "
        f"{m.power_kw:10.3f} {soc} {sp} {m.status.value}"
    )


@app.command()
def status(
    site_file: SiteArg,
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="The raw status as JSON.")] = False,
) -> None:
    """Show the running agent's connection, spool and per-asset figures."""
    _, settings = _load(site_file, state_dir=state_dir)
    snap = read_status(settings.state_dir)
    if snap is None:
        raise _fail(f"no status in {settings.state_dir}: the gateway has not run there", 1)
    if as_json:
        typer.echo(json.dumps(snap, indent=1))
    else:
        typer.echo(render(snap, datetime.now(UTC)))
    age = (datetime.now(UTC) - datetime.fromisoformat(snap["updated_at"])).total_seconds()
    if age > max(3 * float(snap.get("tick_s", 4.0)), 15.0):
        typer.echo(f"warning: status is {age:.0f} s old: is the gateway running?", err=True)
        raise typer.Exit(3)


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"vpp-gateway {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """VPP Edge Gateway on-site agent."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
