"""The state database: seq counters, journal expiry, spool replay rules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from vpp_gateway.model import Ack, AckState, Reading, Status
from vpp_gateway.state import StateStore


def _readings(asset: str, seqs: range) -> list[Reading]:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    return [Reading(asset, s, ts, float(s), Status.OK) for s in seqs]


async def test_sent_readings_above_watermark_are_replayed(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path, 1 << 20)
    try:
        await store.record_tick(_readings("a", range(1, 6)), {"a": 5}, sent_at=1000, prune_before=0)
        await store.record_tick(_readings("a", range(6, 9)), {"a": 8}, sent_at=0, prune_before=0)
        assert store.depth == 3
        # the headend stored up to 3: 4 and 5 were lost on the wire, 6..8 never sent
        assert await store.prepare_replay({"a": 3}) == 5
        batch = await store.next_batch(100)
        assert [r.seq for _, r in batch] == [4, 5, 6, 7, 8]
        await store.mark_sent([i for i, _ in batch], 2000)
        assert store.depth == 0
        assert store.load_seqs() == {"a": 8}
    finally:
        await store.close()


async def test_sent_readings_are_pruned_after_retention(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path, 1 << 20)
    try:
        await store.record_tick(_readings("a", range(1, 4)), {"a": 3}, sent_at=100, prune_before=0)
        await store.record_tick(
            _readings("a", range(4, 5)), {"a": 4}, sent_at=200, prune_before=150
        )
        assert [r.seq for r in store.spool_snapshot()] == [4]
    finally:
        await store.close()


async def test_journal_persists_and_prunes(tmp_path: Path) -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    store = await StateStore.open(tmp_path, 1 << 20)
    await store.journal_put(Ack("sp-1", AckState.APPLIED, ts, "a", applied_kw=3.0), 1000.0)
    await store.journal_put(Ack("sp-2", AckState.EXPIRED, ts, "a"), 5000.0)
    await store.close()
    store = await StateStore.open(tmp_path, 1 << 20)
    try:
        got = store.journal_get("sp-1")
        assert got is not None
        assert got.applied_kw == 3.0
        assert got.state is AckState.APPLIED
        assert await store.journal_prune(2000.0) == 1
        assert store.journal_get("sp-1") is None
        assert store.journal_get("sp-2") is not None
    finally:
        await store.close()
    store = await StateStore.open(tmp_path, 1 << 20)
    try:
        assert store.journal_get("sp-1") is None
    finally:
        await store.close()


async def test_a_full_spool_gives_up_sent_readings_before_unsent_ones(tmp_path: Path) -> None:
    # A replay under way: the spool is full of readings the headend has not seen, and live
    # ticks (already sent) keep arriving. Keeping the bound must cost the sent ones only.
    store = await StateStore.open(tmp_path, 65536)
    try:
        seq = 0
        while store.dropped == 0:
            await store.record_tick(
                _readings("a", range(seq + 1, seq + 41)), {"a": seq + 40}, 0, prune_before=0
            )
            seq += 40
        waiting = [r.seq for r in store.spool_snapshot()]
        dropped, depth = store.dropped, store.depth
        assert waiting == list(range(waiting[0], seq + 1))  # the oldest went, the rest in order
        for live in range(50):
            first = 100_000 + 40 * live
            await store.record_tick(
                _readings("b", range(first, first + 40)), {"b": first + 39}, 1000, prune_before=0
            )
            assert store.used_bytes <= 65536
        assert (store.dropped, store.depth) == (dropped, depth)
        assert [r.seq for r in store.spool_snapshot() if r.asset_id == "a"] == waiting
    finally:
        await store.close()
