"""Pure rules of dispatch delivery, property-tested: the state machine
(`dispatch.transitions`) with cancels (`dispatch.cancel`) and releases
(`dispatch.acks.release_state`), what an ack took (`dispatch.acks.took_from`), what a
RELEASED ack does (`dispatch.acks.apply_ack`) and the group split by live envelope
(`dispatch.planning.split_group`)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import event, given, settings
from hypothesis import strategies as st

from vpp_headend.db.dispatch_rows import (
    DeliveryRow,
    DispatchRow,
    Locked,
    Released,
    Taken,
    TargetRow,
)
from vpp_headend.dispatch import cancel as cancelling
from vpp_headend.dispatch.acks import AckApplied, AckIgnored, apply_ack, release_state, took_from
from vpp_headend.dispatch.planning import split_group
from vpp_headend.dispatch.transitions import (
    Transition,
    advance,
    dispatch_outcome,
    falls_short,
    taken,
)
from vpp_headend.domain import (
    CONTROL_ENDED_STATES,
    IN_FLIGHT_STATES,
    OUTCOME_STATES,
    SETTLED_STATES,
    STATE_RANK,
    TERMINAL_STATES,
    Ack,
    Allocation,
    Asset,
    Envelope,
    Site,
)
from vpp_headend.lifecycle import aggregate

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ID = UUID("00000000-0000-4000-8000-000000000001")
MOVES = ("sent", "received", "applied", "failed", "rejected", "expired", "superseded")
CAUSES = ("duration_ended", "failsafe", "cancelled", None)
NOT_COUNTED = ("superseded", "skipped")

kw = st.integers(-5_000, 5_000).map(lambda n: n / 10)  # -500.0 … 500.0 kW in 0.1 kW


@st.composite
def dispatches(draw: st.DrawFn) -> Locked:
    """A new dispatch: 1-4 deliveries, pending (or skipped, as a group member offline)."""
    n = draw(st.integers(1, 4))
    deliveries = {}
    for i in range(n):
        skipped = i > 0 and draw(st.booleans())
        state = "skipped" if skipped else "pending"
        share = 0.0 if skipped else draw(kw)
        deliveries[f"s{i}"] = DeliveryRow(f"s{i}", share, state, None, 0)
    # The request may exceed what the shares add up to: a split that fell short.
    requested = math.fsum(d.power_kw for d in deliveries.values()) + draw(
        st.sampled_from([0.0, 0.0, 0.3, 25.0])
    )
    row = DispatchRow(ID, "group", "g", requested, "pending", T0, T0 + timedelta(minutes=5))
    return Locked(row, deliveries, {})


@st.composite
def moves(draw: st.DrawFn, sites: list[str]) -> tuple[str, str, Taken | None]:
    """One step: the operator's cancel, or an ack-like move of a site (a state, for
    applied / failed what was taken, or ``released:<cause>``)."""
    if draw(st.integers(0, 9)) == 0:
        return "", "cancel", None
    site = draw(st.sampled_from([*sites, "elsewhere"]))
    if draw(st.integers(0, 4)) == 0:
        return site, f"released:{draw(st.sampled_from(CAUSES))}", None
    state = draw(st.sampled_from(MOVES))
    took = None
    if state in ("applied", "failed") and draw(st.booleans()):
        took = Taken(draw(kw), 0.0)  # the shortfall is set from the share below
    return site, state, took


def _cancel(locked: Locked, now: datetime) -> Locked:
    """The operator's cancel, checked against its rules; the dispatch as it reads after."""
    before = {s: d.state for s, d in locked.deliveries.items()}
    outcome = cancelling.decide(locked, now, None)
    if locked.dispatch.cancel_requested_at is not None:
        assert isinstance(outcome, cancelling.CancelRepeated)
        return locked
    if locked.dispatch.state in TERMINAL_STATES:
        assert outcome == cancelling.CancelRefused(locked.dispatch.state)
        return locked
    assert isinstance(outcome, cancelling.Cancel)
    for t in outcome.transitions:
        _check_move(locked, t, before[t.delivery.site_id])
        locked = t.applied_to(locked)
    after = {s: d.state for s, d in locked.deliveries.items()}
    for site, old in before.items():
        if old == "pending":
            assert after[site] == "cancelled"
        elif old in IN_FLIGHT_STATES or old in SETTLED_STATES:
            assert after[site] == "cancelling"
            assert site in outcome.releasing
        else:
            assert after[site] == old
    # Nothing is left in flight or in force: everything ends, or waits for its release.
    assert not set(after.values()) & (IN_FLIGHT_STATES | SETTLED_STATES)
    dispatch = replace(locked.dispatch, cancel_requested_at=now)
    return replace(locked, dispatch=dispatch)


def _check_move(locked: Locked, t: Transition, old: str) -> None:
    """One delivery's move: forward only, never out of an ended state, the dispatch
    following its deliveries (never backwards, never out of an ended state either)."""
    new = t.delivery.state
    assert old not in TERMINAL_STATES
    assert STATE_RANK[new] > STATE_RANK[old]
    assert (t.delivery.applied_at is not None) == (new in SETTLED_STATES)
    assert (t.delivery.release_requested_at is not None) == (new == "cancelling")
    site = t.delivery.site_id
    assert (t.events[0].state, t.events[0].scope, t.events[0].scope_id) == (new, "site", site)
    after = t.applied_to(locked)
    expected, total = dispatch_outcome(locked.dispatch.power_kw, after.deliveries.values())
    assert after.dispatch.state == expected
    # A dispatch event and a dispatch move exactly when its state changed.
    changed = expected != locked.dispatch.state
    assert (t.dispatch is not None) == changed
    assert [e.scope for e in t.events] == (["site", "dispatch"] if changed else ["site"])
    if t.dispatch is not None:
        assert t.dispatch.taken == total
        assert t.final == (expected if expected in OUTCOME_STATES else None)
        # applied_at: only when the dispatch first settles.
        first = expected in SETTLED_STATES and locked.dispatch.state not in SETTLED_STATES
        assert (t.dispatch.applied_at is not None) == first
    assert locked.dispatch.state not in TERMINAL_STATES  # nothing moves an ended one
    assert STATE_RANK[expected] >= STATE_RANK[locked.dispatch.state]  # never backwards


@settings(max_examples=400, deadline=None)
@given(data=st.data(), locked=dispatches())
def test_moves_are_forward_only_terminal_states_stay_and_the_dispatch_follows(
    data: st.DataObject, locked: Locked
) -> None:
    sites = sorted(locked.deliveries)
    for step in range(data.draw(st.integers(1, 14))):
        site, state, took = data.draw(moves(sites))
        now = T0 + timedelta(seconds=step)
        if state == "cancel":
            locked = _cancel(locked, now)
            continue
        before = locked.deliveries.get(site)
        released = None
        if state.startswith("released:"):
            cause = state.partition(":")[2] or None
            cancelled = locked.dispatch.cancel_requested_at is not None
            state = release_state(cause, cancelled)  # type: ignore[arg-type]
            released = Released(now, cause)
            assert state == "cancelled" or not cancelled  # a cancel's release ends cancelled
        if took is not None and before is not None:
            took = taken(before.power_kw, took.allocated_kw)
        t = advance(locked, site, state, now, took=took, released=released)
        if t is None:
            # Not progress: unknown site, an ended delivery, or not a step forward.
            assert (
                before is None
                or before.state in TERMINAL_STATES
                or STATE_RANK[state] <= STATE_RANK[before.state]
            )
            continue
        assert before is not None
        _check_move(locked, t, before.state)
        # applied becomes partially_applied exactly when the devices took too little.
        if state == "applied":
            short = took is not None and falls_short(took.shortfall_kw, before.power_kw)
            assert t.delivery.state == ("partially_applied" if short else "applied")
        else:
            assert t.delivery.state == state
        assert (t.delivery.released is not None) == (state in CONTROL_ENDED_STATES)
        locked = t.applied_to(locked)
    event(f"dispatch ends {locked.dispatch.state}")
    _check_final(locked)


def _check_final(locked: Locked) -> None:
    """The dispatch's state is the aggregate of its deliveries'; once settled or ended
    by delivery with something taken, allocated + shortfall is what was requested."""
    states = [d.state for d in locked.deliveries.values()]
    state, total = dispatch_outcome(locked.dispatch.power_kw, locked.deliveries.values())
    assert locked.dispatch.state == state
    counted = {s for s in states if s not in NOT_COUNTED}
    in_flight = [s for s in states if s in IN_FLIGHT_STATES]
    if in_flight:
        assert state == min(in_flight, key=STATE_RANK.__getitem__)
        assert total is None
        return
    if "cancelling" in states:
        assert state == "cancelling"
        return
    if counted & SETTLED_STATES:  # something in force: not ended, still cancellable
        assert state in SETTLED_STATES
        assert total is not None
        partial = (
            "partially_applied" in counted
            or bool(counted & {"failed", "rejected", "expired"})
            or falls_short(total.shortfall_kw, locked.dispatch.power_kw)
        )
        assert state == ("partially_applied" if partial else "applied")
    else:
        assert state in TERMINAL_STATES
        assert (state == "completed") == (bool(counted) and counted == {"completed"})
        if locked.dispatch.cancel_requested_at is not None:
            assert state == "cancelled"
    if total is not None:
        assert math.isclose(
            total.allocated_kw + total.shortfall_kw, locked.dispatch.power_kw, abs_tol=1e-6
        )


def test_aggregate_of_a_multi_site_dispatch() -> None:
    """Examples of the rules the property test checks."""
    assert aggregate(["applied", "sent"]) == "sent"
    assert aggregate(["applied", "completed"]) == "applied"  # one still in force
    assert aggregate(["applied", "rejected"]) == "partially_applied"  # cancellable
    assert aggregate(["completed", "completed", "skipped"]) == "completed"
    assert aggregate(["completed", "failed"]) == "failed"
    assert aggregate(["completed", "released"]) == "released"
    assert aggregate(["cancelling", "completed"]) == "cancelling"
    assert aggregate(["cancelled", "failed", "superseded"]) == "cancelled"


# -- RELEASED acks ------------------------------------------------------------------------


def _applied_group(cancel: bool = False) -> Locked:
    row = DispatchRow(
        ID,
        "site",
        "site-a",
        20.0,
        "cancelling" if cancel else "applied",
        T0,
        T0 + timedelta(minutes=5),
        cancel_requested_at=T0 if cancel else None,
    )
    state = "cancelling" if cancel else "applied"
    dlv = {"site-a": DeliveryRow("site-a", 20.0, state, T0, 1, 20.0)}
    targets = {
        a: TargetRow(ID, a, "site-a", 10.0, "applied", 10.0, False, None, T0)
        for a in ("a-1", "a-2")
    }
    return Locked(row, dlv, targets)


def _released(cause: str | None, *assets: str, reason: str = "") -> Ack:
    allocations = tuple(Allocation(a, 10.0) for a in assets)
    return Ack(ID, "", "released", reason, T0, allocations=allocations, release_cause=cause)  # type: ignore[arg-type]


def test_a_released_ack_ends_the_delivery_by_its_cause_and_every_asset_row_with_it() -> None:
    served = frozenset({"a-1", "a-2"})
    now = T0 + timedelta(seconds=10)
    for cause, end in (("duration_ended", "completed"), ("failsafe", "released")):
        out = apply_ack(_applied_group(), "site-a", served, _released(cause, "a-1"), now)
        assert isinstance(out, AckApplied)
        assert out.transition is not None
        assert out.transition.delivery.state == end
        assert out.transition.delivery.released == Released(T0, cause)  # the gateway's time
        assert out.transition.dispatch is not None
        assert out.transition.dispatch.state == end
        rows = {r.asset_id: r for r in out.targets}
        assert {a: r.state for a, r in rows.items()} == {"a-1": end, "a-2": end}
        assert rows["a-2"].reason is not None
        assert "not in force" in rows["a-2"].reason
        assert [(e.state, e.scope_id) for e in out.events] == [(end, "a-1"), (end, "a-2")]
        assert out.sent_at is None  # a release is not a delivery's final ack
    failsafe = apply_ack(_applied_group(), "site-a", served, _released("failsafe"), now)
    assert isinstance(failsafe, AckApplied)
    assert failsafe.transition is not None
    assert "fail-safe" in (failsafe.transition.delivery.reason or "")


def test_after_a_cancel_any_release_ends_cancelled_and_keeps_its_cause() -> None:
    served = frozenset({"a-1", "a-2"})
    locked = _applied_group(cancel=True)
    out = apply_ack(locked, "site-a", served, _released("failsafe", "a-1", "a-2"), T0)
    assert isinstance(out, AckApplied)
    assert out.transition is not None
    assert out.transition.delivery.state == "cancelled"
    assert "fail-safe" in (out.transition.delivery.reason or "")
    # The same ack again changes nothing; nor does one with no allocations.
    after = out.transition.applied_to(locked)
    after = replace(after, targets={r.asset_id: r for r in out.targets})
    assert apply_ack(after, "site-a", served, _released("failsafe"), T0) == AckIgnored("repeat")
    nothing = apply_ack(locked, "site-a", served, _released("cancelled", reason="not in force"), T0)
    assert isinstance(nothing, AckApplied)
    assert nothing.transition is not None
    assert nothing.transition.delivery.state == "cancelled"
    said = nothing.transition.delivery.reason or ""
    assert "nothing was left to release" in said
    assert "(gateway: not in force)" in said


def test_a_release_before_any_apply_ack_ends_a_sent_delivery() -> None:
    """The gateway restarted, or the release raced the setpoint: forward is forward."""
    row = DispatchRow(ID, "asset", "a-1", 5.0, "sent", T0, T0 + timedelta(minutes=5))
    target = TargetRow(ID, "a-1", "site-a", 5.0, "pending", None, False, None, T0)
    locked = Locked(row, {"site-a": DeliveryRow("site-a", 5.0, "sent", T0, 1)}, {"a-1": target})
    out = apply_ack(locked, "site-a", frozenset({"a-1"}), _released("duration_ended", "a-1"), T0)
    assert isinstance(out, AckApplied)
    assert out.transition is not None
    assert (out.transition.delivery.state, out.transition.final) == ("completed", "completed")
    assert [r.state for r in out.targets] == ["completed"]


@given(requested=kw, allocated=kw)
def test_taken_adds_up_and_the_tolerance_is_half_a_kw_or_half_a_percent(
    requested: float, allocated: float
) -> None:
    t = taken(requested, allocated)
    assert math.isclose(t.allocated_kw + t.shortfall_kw, requested, abs_tol=1e-8)
    assert math.copysign(1.0, t.shortfall_kw) == 1.0 or t.shortfall_kw < 0  # never -0.0
    limit = max(0.5, 0.005 * abs(requested))
    assert falls_short(t.shortfall_kw, requested) == (abs(t.shortfall_kw) > limit)
    assert falls_short(-t.shortfall_kw, requested) == falls_short(t.shortfall_kw, requested)


def test_taken_from_an_ack_per_gateway_generation() -> None:
    def ack(state: str = "applied", **kw: object) -> Ack:
        return Ack(ID, "", state, **kw)  # type: ignore[arg-type]

    a = Allocation
    # Round 2: per allocation what the device set; one that did not confirm counts 0.
    allocs = (a("x", 30.0, 30.0), a("y", 20.0, None, "device_timeout"))
    assert took_from(ack(), 50.0, allocs) == Taken(30.0, 20.0)
    # An older gateway: allocations without applied power were taken as allocated.
    assert took_from(ack(), 50.0, (a("x", 30.0), a("y", 20.0))) == Taken(50.0, 0.0)
    # An asset or legacy ack: its applied_kw; else the share less its shortfall.
    assert took_from(ack(applied_kw=42.0), 50.0, ()) == Taken(42.0, 8.0)
    assert took_from(ack(shortfall_kw=5.0), 50.0, ()) == Taken(45.0, 5.0)
    assert took_from(ack(), 50.0, ()) == Taken(50.0, 0.0)
    # FAILED counts only what is known to have been set; RECEIVED takes nothing yet.
    assert took_from(ack("failed"), 50.0, (a("x", 30.0),)) is None
    assert took_from(ack("failed"), 50.0, (a("x", 30.0, 12.0),)) == Taken(12.0, 38.0)
    assert took_from(ack("received"), 50.0, ()) is None


# -- group split ---------------------------------------------------------------------------


def _site(site_id: str, cap: float, n: int = 1) -> Site:
    assets = tuple(Asset(f"{site_id}-{i}", site_id, "bess", capacity_kw=cap) for i in range(n))
    return Site(site_id, assets)


def _env(lo: float | None, hi: float | None) -> Envelope:
    return Envelope(lo, hi, None, T0)


envelope_end = st.one_of(st.none(), st.integers(-2_000, 2_000).map(lambda n: n / 10))


@settings(max_examples=200, deadline=None)
@given(
    caps=st.lists(st.integers(0, 500).map(float), min_size=1, max_size=5),
    ends=st.lists(st.tuples(envelope_end, envelope_end), min_size=5, max_size=5),
    online_mask=st.lists(st.booleans(), min_size=5, max_size=5),
    request=st.integers(-100_000, 100_000).map(lambda n: n / 100),
)
def test_the_group_split_is_exact_within_each_sites_live_envelope(
    caps: list[float],
    ends: list[tuple[float | None, float | None]],
    online_mask: list[bool],
    request: float,
) -> None:
    sites = [_site(f"s{i}", cap) for i, cap in enumerate(caps)]
    live = {}
    for site, (lo, hi) in zip(sites, ends, strict=False):
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        if lo is not None or hi is not None:
            live[site.assets[0].asset_id] = _env(lo, hi)
    online = {s.site_id for s, up in zip(sites, online_mask, strict=False) if up}
    plan = split_group(request, sites, online, live)

    by_site = {p.site_id: p for p in plan.deliveries}
    assert sorted(by_site) == [s.site_id for s in sites]  # every member is recorded
    sharing = online or set(by_site)
    room_lo = room_hi = 0.0
    for site in sites:
        p = by_site[site.site_id]
        assert p.skipped == (site.site_id not in sharing)
        if p.skipped:
            assert p.power_kw == 0.0
            continue
        lo, hi = site.bounds
        env = live.get(site.assets[0].asset_id)
        if env is not None:  # the device's live truth wins over its registry limits
            a_lo = -math.inf if env.available_min_kw is None else env.available_min_kw
            a_hi = math.inf if env.available_max_kw is None else env.available_max_kw
            lo, hi = min(max(lo, a_lo), a_hi), min(max(hi, a_lo), a_hi)
        assert lo - 1e-9 <= p.power_kw <= hi + 1e-9, (site.site_id, p.power_kw, lo, hi)
        room_lo, room_hi = room_lo + lo, room_hi + hi
    total = math.fsum(p.power_kw for p in plan.deliveries)
    if room_lo <= request <= room_hi:  # reachable: met exactly (to the split's 1 W grid)
        assert math.isclose(total, request, abs_tol=1e-6), plan.detail
    else:  # every sharing site at its limit in the request's direction
        assert math.isclose(total, room_hi if request > room_hi else room_lo, abs_tol=1e-6)


def test_the_group_split_weights_sites_by_live_headroom_not_nameplate() -> None:
    sites = [_site("a", 100.0), _site("b", 100.0, n=2)]
    live = {"a-0": _env(-100.0, 60.0), "b-0": _env(-100.0, 10.0), "b-1": _env(-100.0, 10.0)}
    plan = split_group(40.0, sites, {"a", "b"}, live)
    assert {p.site_id: p.power_kw for p in plan.deliveries} == {"a": 30.0, "b": 10.0}
    # Charging, the same envelopes leave both their full import room: 100 : 200.
    plan = split_group(-60.0, sites, {"a", "b"}, live)
    assert {p.site_id: p.power_kw for p in plan.deliveries} == {"a": -20.0, "b": -40.0}
    # Without envelopes (an older gateway) the registry limits decide: 100 : 200.
    plan = split_group(60.0, sites, {"a", "b"}, {})
    assert {p.site_id: p.power_kw for p in plan.deliveries} == {"a": 20.0, "b": 40.0}
    assert plan.detail is not None
    assert "registry limits: a b" in plan.detail


def test_an_envelope_off_the_grid_still_splits() -> None:
    """A PV at exactly what the sun gives: [12.3456, 12.3456] holds no 1 W grid point;
    the site's bounds are widened by under 1 W instead of the split failing."""
    sites = [_site("a", 100.0), _site("b", 100.0)]
    live = {"a-0": _env(12.3456, 12.3456)}
    plan = split_group(50.0, sites, {"a", "b"}, live)
    shares = {p.site_id: p.power_kw for p in plan.deliveries}
    assert math.isclose(sum(shares.values()), 50.0)
    assert abs(shares["a"] - 12.3456) < 0.001
