"""The garbage-collector policy: young collections on a clock with their survivors frozen,
a full collection now and then, pauses exported — and the process left as it was."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

from headend_waits import eventually
from prometheus_client import CollectorRegistry, generate_latest

from vpp_headend.gcwatch import GcWatch


def _pauses(registry: CollectorRegistry, generation: int) -> float:
    """Collections of ``generation`` timed so far (`GcWatch`'s histogram)."""
    count = registry.get_sample_value("vpp_gc_pause_seconds_count", {"generation": str(generation)})
    return count or 0.0


def _tracked(obj: object) -> bool:
    """Still walked by the collector (not frozen)."""
    return any(o is obj for g in range(3) for o in gc.get_objects(g))


async def test_policy_freezes_survivors_and_collects_everything_now_and_then() -> None:
    before = gc.get_threshold()
    registry = CollectorRegistry()
    watch = GcWatch(registry)
    watch.install(young_threshold=40_000)
    try:
        assert gc.get_threshold()[0] == 40_000
        task = asyncio.create_task(watch.run(freeze_interval_s=0.05, full_interval_s=0.12))
        node = _Node()
        ref = weakref.ref(node)
        # Survivors left the collector's walk: a tick froze the live node.
        await eventually(lambda: not _tracked(ref()), 5, "the live node was never frozen")
        assert gc.get_freeze_count() > 0
        del node  # garbage now, but frozen: young collections skip it
        # Only the periodic full collection (unfreeze + collect) frees a frozen cycle.
        await eventually(lambda: ref() is None, 5, "no full collection freed the frozen cycle")
        assert _pauses(registry, 2) >= 2  # the start-up one and a periodic one
        assert gc.get_freeze_count() > 0  # ... then froze again (same step of the loop)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.collect(0)
        text = generate_latest(registry).decode()
        assert 'vpp_gc_pause_seconds_count{generation="2"}' in text
        assert 'vpp_gc_pause_seconds_count{generation="0"}' in text
    finally:
        watch.uninstall()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_young_garbage_is_collected_on_the_clock_and_survivors_are_frozen() -> None:
    registry = CollectorRegistry()
    watch = GcWatch(registry)
    watch.install(young_threshold=1_000_000)  # no threshold-driven collection in this test
    task = asyncio.create_task(watch.run(freeze_interval_s=0.02, full_interval_s=3600))
    try:
        # The start-up full collection (and the freeze right after it) has run.
        await eventually(lambda: _pauses(registry, 2) >= 1, 5, "no start-up collection")
        garbage = _Node()
        dead = weakref.ref(garbage)
        del garbage  # a cycle: only a collection frees it
        alive = _Node()
        await eventually(lambda: dead() is None, 5, "the young garbage was never collected")
        # The young collection on the clock freed it, not a freeze; the tick that did
        # froze the live one in the same step: later walks skip it.
        assert not _tracked(alive)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        watch.uninstall()
    assert gc.get_freeze_count() == 0


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_full_collection_reclaims_cycles_of_frozen_objects() -> None:
    watch = GcWatch(CollectorRegistry())
    watch.install(young_threshold=50_000)
    try:
        node = _Node()
        ref = weakref.ref(node)
        gc.freeze()  # frozen while alive ...
        del node  # ... then garbage
        gc.collect()
        assert ref() is not None  # ordinary collections skip frozen objects
        assert watch.full_collection() >= 0.0
        assert ref() is None
        assert gc.get_freeze_count() == 0
    finally:
        watch.uninstall()


def test_two_headends_in_one_process_restore_the_thresholds_once() -> None:
    before = gc.get_threshold()
    a, b = GcWatch(CollectorRegistry()), GcWatch(CollectorRegistry())
    a.install(60_000)
    b.install(60_000)
    a.uninstall()
    assert gc.get_threshold()[0] == 60_000  # b still runs
    b.uninstall()
    assert gc.get_threshold() == before
