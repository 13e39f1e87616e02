"""REST dispatch load from the harness parent: POST /dispatch at a rate to random assets,
then GET every 10 ms until the dispatch reaches a final state."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import httpx

from .config import LoadConfig
from .fleet import HeadendProc
from .messages import asset_id
from .waits import until


@dataclass
class Rest:
    """What the dispatcher saw: POST -> APPLIED, and each POST and GET round trip (s)."""

    applied: list[float] = field(default_factory=list)
    post: list[float] = field(default_factory=list)
    get: list[float] = field(default_factory=list)
    # One row per dispatch: wall-clock start (unix s), POST round trip and POST -> APPLIED
    # (s, None if never applied); lines a slow one up with the headends' logs.
    timeline: list[tuple[float, float, float | None]] = field(default_factory=list)


def _count(errors: dict[str, int], kind: str) -> None:
    errors[kind] = errors.get(kind, 0) + 1


async def run_dispatcher(
    headends: list[HeadendProc], cfg: LoadConfig, stop: asyncio.Event, rest: Rest,
    errors: dict[str, int],
) -> int:  # fmt: skip
    """``cfg.dispatch_rate`` dispatches a second, round robin over ``headends``, until
    ``stop``; waits for those in flight and returns how many were sent."""
    if cfg.dispatch_rate <= 0:
        await stop.wait()
        return 0
    rng = random.Random(8)
    inflight: set[asyncio.Task[None]] = set()
    sent = 0
    clients = [
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{h.http_port}", timeout=10) for h in headends
    ]
    try:
        interval = 1.0 / cfg.dispatch_rate
        next_at = time.monotonic()
        while not stop.is_set():
            http = clients[sent % len(clients)]
            task = asyncio.create_task(_one(http, sent, cfg, rng, rest, errors))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            sent += 1
            next_at += interval
            await until(stop, max(0.0, next_at - time.monotonic()))
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
    finally:
        for c in clients:
            await c.aclose()
    return sent


async def _one(
    http: httpx.AsyncClient, n: int, cfg: LoadConfig, rng: random.Random, rest: Rest,
    errors: dict[str, int],
) -> None:  # fmt: skip
    """Dispatch number ``n`` to a random asset, timed from the POST to APPLIED."""
    target = asset_id(rng.randrange(cfg.gateways), rng.randrange(cfg.assets))
    t, wall = time.perf_counter(), time.time()
    post_s = 0.0
    applied_s: float | None = None
    try:
        resp = await http.post("/dispatch", json={"asset_id": target, "power_kw": n % 50})
        post_s = time.perf_counter() - t
        rest.post.append(post_s)
        if resp.status_code != 202:
            _count(errors, f"post_{resp.status_code}")
            return
        applied_s = await _until_final(http, resp.json()["dispatch_id"], t, rest, errors)
    except httpx.HTTPError as exc:
        _count(errors, type(exc).__name__)
    finally:
        rest.timeline.append((wall, post_s, applied_s))


async def _until_final(
    http: httpx.AsyncClient, did: str, t: float, rest: Rest, errors: dict[str, int]
) -> float | None:
    """GET the dispatch every 10 ms for 10 s from ``t`` (perf_counter, its POST): seconds
    from ``t`` to APPLIED, or None for another final state or the timeout."""
    deadline = t + 10
    while time.perf_counter() < deadline:
        t_get = time.perf_counter()
        state = (await http.get(f"/dispatch/{did}")).json()["state"]
        now = time.perf_counter()
        rest.get.append(now - t_get)
        if state == "applied":
            rest.applied.append(now - t)
            return now - t
        if state in ("failed", "rejected", "expired", "superseded"):
            _count(errors, f"dispatch_{state}")
            return None
        await asyncio.sleep(0.01)
    _count(errors, "dispatch_timeout")
    return None
