"""The whole VPP system on one machine, with a scripted scenario to follow (``nox -s demo``).

Starts an embedded PostgreSQL (or uses ``--database-url`` / ``VPP_DEMO_DATABASE_URL``),
loads ``examples/`` into the registry, starts the headend, the site-a gateway (12 assets),
the site-b gateway and two legacy single-asset agents, then walks through telemetry, an
asset, a site and a group dispatch, and a gateway restart with a dispatch issued while it
was offline. Ends by itself (exit 0) and stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from launcher import FAST_GATEWAY, Launcher, Proc, free_ports

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
T = TypeVar("T")
DELIVERY_WINDOW_S = 3  # the headend measures delivered power over this window
# What the demo prints at its end: the commands to run the same system by hand.
# tools/check_docs_install.py (`nox -s packages`) runs its install command in a fresh venv.
HOW_TO_RUN = """   First, from a checkout (the packages are not on PyPI yet: README.md, "Install"):
     pip install -e 'packages/vpp-protocol[upb]' -e packages/vpp-split \\
                 -e 'packages/vpp-headend[embedded]' -e packages/vpp-gateway
   In one shell (embedded PostgreSQL in ./.vpp/pgdata; or --database-url URL):
     vpp-headend assets import examples/*.yaml
     vpp-headend serve                          # REST :8000, gRPC :50051
   In others, one per site:
     vpp-gateway run examples/site-a.yaml       # 12 assets, one gRPC stream
     vpp-gateway run examples/site-b.yaml
     vpp-gateway run examples/legacy-pv-1.yaml  # legacy single-asset agents
     vpp-gateway run examples/legacy-bess-1.yaml
   Then (REST is open until the first token exists; after that every call needs one):
     TOKEN=$(vpp-headend tokens create --role operator | tail -n 1)
     OpenAPI docs     http://127.0.0.1:8000/schema   (always open)
     gateways         curl -H "authorization: Bearer $TOKEN" localhost:8000/gateways
     telemetry        curl -H "authorization: Bearer $TOKEN" localhost:8000/telemetry/site-a-bess-1
     site-a, summed   curl -H "authorization: Bearer $TOKEN" localhost:8000/sites/site-a/telemetry
     metrics          curl -H "authorization: Bearer $TOKEN" localhost:8000/metrics
     dispatch         curl -X POST localhost:8000/dispatch -H "authorization: Bearer $TOKEN" \\
                        -H 'content-type: application/json' \\
                        -d '{"site_id": "site-a", "power_kw": 300}'
   (examples/README.md and docs/runbook.md say more)"""


# -- output ---------------------------------------------------------------------------------
def section(title: str) -> None:
    print(f"\n\033[1m== {title} \033[0m{'=' * max(0, 72 - len(title))}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "   " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("   " + "  ".join("-" * w for w in widths))
    for r in cells:
        print(
            "   "
            + "  ".join(
                c.rjust(w) if c[:1].isdigit() or c[:1] == "-" else c.ljust(w)
                for c, w in zip(r, widths, strict=True)
            )
        )
    sys.stdout.flush()


def exact_sum(values: Sequence[float]) -> Decimal:
    return sum((Decimal(repr(v)) for v in values), Decimal(0))


# -- the demo -------------------------------------------------------------------------------
class Demo:
    def __init__(self, workdir: Path, database_url: str | None) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.launcher = Launcher(workdir)
        self.embedded: Any = None
        self.http: httpx.AsyncClient | None = None
        self.token = ""
        self.headend: Proc | None = None
        self.gateways: dict[str, Proc] = {}
        self.started = time.monotonic()
        #: Where the copies of the examples put solar noon (UTC hours), once one had PV.
        self.solar_noon_utc_h: float | None = None

    # -- helpers ----------------------------------------------------------------------------
    async def until(
        self, probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0
    ) -> T:
        deadline = time.monotonic() + timeout
        while True:
            got = await probe()
            if got:
                return got
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            await asyncio.sleep(0.2)

    async def get(self, path: str, **params: Any) -> Any:
        assert self.http is not None
        resp = await self.http.get(path, params=params or None)
        resp.raise_for_status()
        return resp.json()

    async def get_all(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list (``{"items", "next"}``), following ``next``."""
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {**params, "limit": 1000}
        while True:
            page = await self.get(path, **query)
            items += page["items"]
            if page["next"] is None:
                return items
            query["cursor"] = page["next"]

    async def dispatch(self, power_kw: float, **target: str) -> str:
        assert self.http is not None
        resp = await self.http.post("/dispatch", json={"power_kw": power_kw, **target})
        resp.raise_for_status()
        body = resp.json()
        ((kind, ident),) = target.items()
        say(f"POST /dispatch {{{kind}: {ident}, power_kw: {power_kw}}} -> 202 {body['state']}")
        return str(body["dispatch_id"])

    async def final(self, dispatch_id: str, timeout: float = 30.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            d: dict[str, Any] = await self.get(f"/dispatch/{dispatch_id}")
            final = ("applied", "partially_applied", "failed", "rejected", "expired")
            return d if d["state"] in final else None

        return await self.until(probe, f"dispatch {dispatch_id}", timeout)

    async def measured(self, dispatch_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The dispatch once the headend has measured its delivered power from telemetry."""

        async def probe() -> dict[str, Any] | None:
            d: dict[str, Any] = await self.get(f"/dispatch/{dispatch_id}")
            return d if d["measured_at"] is not None else None

        return await self.until(probe, f"dispatch {dispatch_id} measured", timeout)

    async def show_delivery(self, dispatch_id: str, *, by_site: bool = False) -> None:
        """Requested / allocated / shortfall / delivered, then the same per asset."""
        say(f"waiting for the delivered power, measured over {DELIVERY_WINDOW_S} s of telemetry…")
        d = await self.measured(dispatch_id)
        table(
            ["requested_kw", "allocated_kw", "shortfall_kw", "delivered_kw", "state"],
            [
                (
                    d["requested_kw"],
                    d["allocated_kw"],
                    d["shortfall_kw"],
                    d["delivered_kw"],
                    d["state"],
                )
            ],
        )
        site = ["site"] if by_site else []
        table(
            ["asset", *site, "kind", "allocated_kw", "applied_kw", "delivered_kw", "limit reason"],
            [
                (
                    a["asset_id"],
                    *([a["site_id"]] if by_site else []),
                    self.kinds[a["asset_id"]],
                    a["allocation_kw"],
                    a["applied_kw"],
                    a["delivered_kw"],
                    a["limit_reason"] or "",
                )
                for a in d["allocations"]
            ],
        )
        say("applied: what the device set; delivered: its mean measured power afterwards;")
        say("limit reason: why a device took less than its allocation")

    async def latest(self, asset_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        assert self.http is not None
        out: dict[str, dict[str, Any]] = {}
        for a in asset_ids:
            resp = await self.http.get(f"/telemetry/{a}")
            if resp.status_code == 200:
                out[a] = resp.json()
        return out

    def site_copy(self, name: str, grpc_port: int) -> Path:
        """examples/NAME.yaml for this run: local headend port, 1 s tick, short intervals."""
        doc = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
        doc["headend"] = {"host": "127.0.0.1", "port": grpc_port}
        doc["telemetry_interval_s"] = 1
        doc["gateway"] = dict(FAST_GATEWAY)
        now = datetime.now(UTC)
        for asset in doc["assets"]:
            # The simulated sun follows the clock (default noon 12:00 UTC, 12 h of day), so
            # a demo at night would show PV at 0 kW: move solar noon to now, and say so.
            if asset["kind"] == "pv":
                sim = asset.setdefault("simulator", {})
                if self.solar_noon_utc_h is None:
                    self.solar_noon_utc_h = round(now.hour + now.minute / 60, 3)
                sim.setdefault("solar_noon_utc_h", self.solar_noon_utc_h)
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def say_solar_noon(self) -> None:
        """Why PV produces in this demo whatever the hour, and why it may not by hand."""
        noon = self.solar_noon_utc_h
        if noon is None:
            return
        hh, mm = divmod(round(noon * 60), 60)
        for line in (
            f"PV: solar noon moved to now ({hh:02d}:{mm:02d} UTC; simulator.solar_noon_utc_h: "
            f"{noon:g} in this run's copies",
            "  of the examples), so PV produces whatever the hour. The simulated sun follows the",
            "  clock (noon 12:00 UTC, 12 h of daylight unless set): by hand at night, the",
            "  examples' PV reads 0 kW (standby) until you set simulator.solar_noon_utc_h",
            "  (examples/README.md says how)",
        ):
            say(line)

    # -- steps ------------------------------------------------------------------------------
    async def start(self) -> None:
        section("1. Start: PostgreSQL, registry, headend, gateways")
        if self.database_url is None:
            from vpp_headend.db.embedded import start_embedded

            t0 = time.monotonic()
            self.embedded = await asyncio.to_thread(start_embedded, self.workdir / "pgdata")
            self.database_url = str(self.embedded.url)
            say(f"embedded PostgreSQL started in {time.monotonic() - t0:.1f} s")
            say(f"  data: {self.embedded.data_dir}")
        else:
            say("PostgreSQL: the server given with --database-url / VPP_DEMO_DATABASE_URL")
        assert self.database_url is not None
        await self.cli("vpp-headend", "db", "upgrade", "--database-url", self.database_url)
        say("schema migrated (vpp-headend db upgrade)")
        grpc_port, http_port = free_ports(2)
        names = ["site-a", "site-b", "legacy-pv-1", "legacy-bess-1"]
        sites = {n: self.site_copy(n, grpc_port) for n in names}
        self.say_solar_noon()
        out = await self.launcher.import_sites(self.database_url, list(sites.values()))
        say("registry imported (vpp-headend assets import examples/*.yaml):")
        for line in out.strip().splitlines():
            say(f"  {line}")
        created = await self.cli(
            "vpp-headend",
            "tokens",
            "create",
            "--role",
            "operator",
            "--name",
            "demo",
            "--database-url",
            self.database_url,
        )
        self.token = created.strip().splitlines()[-1]
        say("operator token created (vpp-headend tokens create --role operator):")
        say(f"  {self.token}")
        say("  REST now requires it: Authorization: Bearer <token> (viewers may only read)")
        self.headend = self.launcher.headend(
            self.database_url, grpc_port=grpc_port, http_port=http_port
        )
        # a short measurement window (default 8 s) so the demo does not wait long
        self.headend.env["VPP_DELIVERY_WINDOW_S"] = str(DELIVERY_WINDOW_S)
        self.headend.env["VPP_DELIVERY_SETTLE_S"] = "1"
        await self.headend.start()
        await self.headend.wait_for_log(r"event=listening", timeout=60)
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}",
            headers={"authorization": f"Bearer {self.token}"},
            timeout=10,
        )
        say(f"headend: REST http://127.0.0.1:{http_port}  gRPC 127.0.0.1:{grpc_port}")
        for name, path in sites.items():
            self.gateways[name] = await self.launcher.gateway(path, name=f"gw-{name}").start()
        for name in names:
            await self.gateways[name].wait_for_log(r"event=connected", timeout=30)
        rows = [r for r in await self.get_all("/gateways") if r["connected"]]
        table(
            ["site", "mode", "assets served", "remote", "epoch"],
            [
                (
                    r["site_id"],
                    "legacy agent" if r["site_id"].startswith("legacy") else "gateway",
                    len(r["assets_served"]),
                    r["remote"],
                    r["epoch"],
                )
                for r in rows
            ],
        )
        say("site-a's 12 assets share ONE gRPC stream (one row, one remote address)")

    async def telemetry(self) -> None:
        section("2. Telemetry arriving per asset (GET /telemetry/{asset_id})")
        assets = await self.get_all("/assets")
        self.kinds = {a["asset_id"]: a["kind"] for a in assets}
        self.site_a = [a["asset_id"] for a in assets if a["site_id"] == "site-a"]
        ids = list(self.kinds)

        async def all_in() -> dict[str, dict[str, Any]] | None:
            got = await self.latest(ids)
            return (
                got if len(got) == len(ids) and all(r["seq"] >= 2 for r in got.values()) else None
            )

        latest = await self.until(all_in, "telemetry from every asset")
        table(
            ["asset", "kind", "site", "seq", "power_kw", "soc_pct", "status", "lag_s"],
            [
                (
                    a,
                    self.kinds[a],
                    r["site_id"],
                    r["seq"],
                    r["power_kw"],
                    r["soc_pct"],
                    r["status"],
                    r["lag_s"],
                )
                for a, r in latest.items()
            ],
        )
        say(f"{len(latest)} assets, each with its own latest reading (1 s tick)")

    async def asset_dispatch(self) -> None:
        section("3. Per-asset dispatch: only that asset changes")
        target = "site-a-bess-1"
        before = await self.latest(self.site_a)
        did = await self.dispatch(-50.0, asset_id=target)
        d = await self.final(did)
        say(f"dispatch {did[:8]}… {d['state']}")

        async def shows() -> dict[str, dict[str, Any]] | None:
            got = await self.latest(self.site_a)
            return got if got[target]["setpoint_id"] == did else None

        after = await self.until(shows, "the new setpoint in telemetry")
        rows = []
        for a in self.site_a:
            b, n = before[a], after[a]
            changed = b["setpoint_kw"] != n["setpoint_kw"]
            rows.append(
                (
                    a,
                    b["setpoint_kw"],
                    n["setpoint_kw"],
                    n["power_kw"],
                    "<- changed" if changed else "",
                )
            )
        table(["asset", "setpoint before", "setpoint after", "power_kw", ""], rows)
        n_changed = sum(1 for r in rows if r[4])
        say(f"{n_changed} of {len(rows)} site-a assets changed setpoint")
        if n_changed != 1:
            raise RuntimeError("a per-asset dispatch changed more than its asset")

    async def site_dispatch(self) -> None:
        section("4. Site dispatch: the gateway splits it across site-a's assets")
        power = 400.0
        did = await self.dispatch(power, site_id="site-a")
        d = await self.final(did)
        line = await self.gateways["site-a"].wait_for_log(rf"event=split setpoint_id={did}[^\n]*")
        found = re.search(r'allocations="?([^"\s]+)', line)
        assert found is not None
        split = {k: float(v) for k, v in (p.split("=") for p in found[1].split(","))}
        acked = {a["asset_id"]: a["allocation_kw"] for a in d["allocations"]}
        if acked != split:
            raise RuntimeError("the headend's allocations differ from the gateway's split")
        total = exact_sum(list(split.values()))
        say(
            f"sum of the split = {total} kW (requested {power} kW): "
            + ("exact" if total == Decimal(repr(power)) else "NOT EXACT")
        )
        say("the gateway split it over what each asset can do now (its live envelope: PV")
        say("up to what the sun gives, batteries within their state of charge); meters take")
        say("no share, and the same request over the same envelopes gives the same split")
        say("gateway log: " + re.sub(r"^ts=\S+ ", "", line)[:160] + " …")
        if total != Decimal(repr(power)):
            raise RuntimeError("the site split does not sum to the request")
        await self.show_delivery(did)

    async def group_dispatch(self) -> None:
        section("5. Group dispatch: vpp-north spans site-a and site-b")
        power = -200.0
        did = await self.dispatch(power, group_id="vpp-north")
        d = await self.final(did)
        say("headend split by site (each site's live aggregate envelope):")
        table(
            ["site", "share_kw", "state"],
            [(x["site_id"], x["power_kw"], x["state"]) for x in d["deliveries"]],
        )
        say("each gateway split its share across its assets (table below)")
        shares = exact_sum([x["power_kw"] for x in d["deliveries"]])
        total = exact_sum([a["allocation_kw"] for a in d["allocations"]])
        say(
            f"sum of site shares = {shares} kW, sum of asset allocations = {total} kW "
            f"(requested {power} kW)"
        )
        if not shares == total == Decimal(repr(power)):
            raise RuntimeError("the group split does not sum to the request")
        await self.show_delivery(did, by_site=True)

    async def time_in_force(self) -> None:
        section("6. Time in force: a dispatch that ends by itself, and one cancelled")
        assert self.http is not None
        target, duration = "site-a-bess-1", 5
        resp = await self.http.post(
            "/dispatch", json={"asset_id": target, "power_kw": 60.0, "duration_s": duration}
        )
        resp.raise_for_status()
        did = str(resp.json()["dispatch_id"])
        say(f"POST /dispatch {{asset_id: {target}, power_kw: 60, duration_s: {duration}}}")
        await self.final(did)

        async def in_force() -> dict[str, Any] | None:
            r: dict[str, Any] = (await self.latest([target]))[target]
            return r if r["setpoint_id"] == did else None

        r = await self.until(in_force, "the setpoint in telemetry")
        say(f"in force: setpoint_kw {r['setpoint_kw']}, until {r['setpoint_ends_at']}")
        say("the gateway ends it on its own clock (it would also while the headend is down)…")

        async def completed() -> dict[str, Any] | None:
            d: dict[str, Any] = await self.get(f"/dispatch/{did}")
            return d if d["state"] == "completed" else None

        d = await self.until(completed, f"dispatch {did} completed", timeout=duration + 15)
        table(
            ["at", "state", "detail"],
            [(e["at"][11:23], e["state"], e["detail"] or "") for e in d["transitions"]],
        )

        async def released() -> dict[str, Any] | None:
            r: dict[str, Any] = (await self.latest([target]))[target]
            return r if r["setpoint_kw"] is None else None

        r = await self.until(released, "the release in telemetry")
        say(f"telemetry now: setpoint_kw null, power_kw {r['power_kw']} (a battery idles)")

        did = await self.dispatch(50.0, site_id="site-b")
        await self.final(did)
        resp = await self.http.post(f"/dispatch/{did}/cancel", json={})
        resp.raise_for_status()
        say(f"POST /dispatch/{did[:8]}…/cancel -> {resp.status_code} {resp.json()['state']}")

        async def cancelled() -> dict[str, Any] | None:
            d: dict[str, Any] = await self.get(f"/dispatch/{did}")
            return d if d["state"] == "cancelled" else None

        d = await self.until(cancelled, f"dispatch {did} cancelled")
        say("the gateway released every asset it had set and acked; the dispatch's transitions:")
        table(
            ["at", "state", "detail"],
            [(e["at"][11:23], e["state"], e["detail"] or "") for e in d["transitions"]],
        )

    async def restart(self) -> None:
        section("7. Gateway restart with a dispatch issued while it was offline")
        gw = self.gateways["site-a"]
        await gw.stop()
        say("site-a gateway stopped (SIGTERM)")

        async def offline() -> bool:
            rows = await self.get_all("/gateways")
            return not next(r for r in rows if r["site_id"] == "site-a")["connected"]

        await self.until(offline, "site-a offline")
        did = await self.dispatch(80.0, asset_id="site-a-bess-2")
        d = await self.get(f"/dispatch/{did}")
        say(f"dispatch {did[:8]}… is {d['state']} (target offline, held until it expires)")
        t0 = time.monotonic()
        await gw.start()
        say("site-a gateway started again")
        d = await self.final(did)
        say(f"delivered after reconnect and {d['state']} in {time.monotonic() - t0:.1f} s")
        table(
            ["at", "state", "scope"],
            [(e["at"][11:23], e["state"], e["scope"]) for e in d["transitions"]],
        )

    async def summary(self) -> None:
        section("8. Summary")
        rows = (await self.get("/dispatches", limit=20))["items"]
        table(
            ["dispatch", "target", "power_kw", "state"],
            [
                (
                    r["dispatch_id"][:8],
                    f"{r['target']['kind']}:{r['target']['id']}",
                    r["power_kw"],
                    r["state"],
                )
                for r in reversed(rows)
            ],
        )
        assert self.http is not None
        metrics = (await self.http.get("/metrics")).text
        wanted = (
            "vpp_gateways_connected",
            "vpp_assets_served",
            "vpp_telemetry_rows_stored_total",
            "vpp_dispatches_final_total",
        )
        say("from GET /metrics:")
        for line in metrics.splitlines():
            if line.startswith(wanted):
                say(f"  {line}")
        say(f"demo took {time.monotonic() - self.started:.0f} s")

    def how_to_continue(self) -> None:
        section("Keep it running yourself")
        print(HOW_TO_RUN, flush=True)

    async def cli(self, *argv: str) -> str:
        """Run one of our CLIs; return its standard output (stderr goes to the error)."""
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / argv[0]),
            *argv[1:],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            text = (out + err).decode(errors="replace")
            raise RuntimeError(f"{' '.join(argv[:3])} failed:\n{text}")
        return out.decode()

    async def close(self) -> None:
        await self.launcher.stop_all()
        if self.http is not None:
            await self.http.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

    def dump_logs(self) -> None:
        for proc in self.launcher.procs:
            print(f"\n--- last lines of {proc.name} ({proc.log_path}) ---", file=sys.stderr)
            print("\n".join(proc.log().splitlines()[-15:]), file=sys.stderr)


async def run(workdir: Path, database_url: str | None) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, kill: clean up, then exit
        loop.add_signal_handler(sig, main.cancel)
    demo = Demo(workdir, database_url)
    try:
        await demo.start()
        await demo.telemetry()
        await demo.asset_dispatch()
        await demo.site_dispatch()
        await demo.group_dispatch()
        await demo.time_in_force()
        await demo.restart()
        await demo.summary()
    except Exception as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        demo.dump_logs()
        return 1
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(demo.close())
    demo.how_to_continue()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("VPP_DEMO_DATABASE_URL") or None,
        help="an empty, dedicated PostgreSQL database (default: embedded PostgreSQL)",
    )
    parser.add_argument("--workdir", type=Path, help="logs and state (default: a temp dir)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            return asyncio.run(run(workdir, args.database_url))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\ninterrupted: every process the demo started has been stopped")
            return 130


if __name__ == "__main__":
    sys.exit(main())
