"""Pure rules: URLs, settings, sequence tracking, lifecycle aggregation, body parsing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vpp_headend.api.bodies import parse_dispatch
from vpp_headend.db.url import DatabaseUrlError, libpq_url, redacted, sqlalchemy_url
from vpp_headend.errors import BadRequestError, ValidationFailedError
from vpp_headend.lifecycle import advances, aggregate
from vpp_headend.logs import kv
from vpp_headend.settings import Settings, SettingsError
from vpp_headend.watermarks import DUPLICATE, MAX_HOLES, SeqTracker


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+psycopg://u@h/db"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/x",
            "postgresql+psycopg://postgres:@/postgres?host=/tmp/x",
        ),
    ],
)
def test_urls_are_normalised_in_one_place(url: str, expected: str) -> None:
    assert sqlalchemy_url(url) == expected
    assert libpq_url(expected).startswith("postgresql://")


def test_bad_urls_and_redaction() -> None:
    with pytest.raises(DatabaseUrlError):
        sqlalchemy_url("mysql://u@h/db")
    with pytest.raises(DatabaseUrlError):
        sqlalchemy_url("just-a-name")
    assert redacted("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"


def test_settings_from_env_and_validation() -> None:
    env = {"VPP_HTTP_PORT": "9000", "VPP_AUTO_ENROLL": "yes", "VPP_HEARTBEAT_INTERVAL_S": "2.5"}
    s = Settings.from_env(env, grpc_port=0, http_port=None)
    assert (s.http_port, s.grpc_port, s.auto_enroll) == (9000, 0, True)
    assert s.heartbeat_interval_s == 2.5
    with pytest.raises(SettingsError, match="heartbeat_interval_s"):
        Settings(heartbeat_interval_s=0)
    with pytest.raises(SettingsError, match="http_port"):
        Settings(http_port=70000)
    with pytest.raises(SettingsError, match="VPP_HTTP_PORT"):
        Settings.from_env({"VPP_HTTP_PORT": "eighty"})
    with pytest.raises(SettingsError, match="database_url"):
        Settings(database_url="sqlite:///x.db")


def test_seq_tracker_basics() -> None:
    t = SeqTracker()
    assert [t.offer(s) for s in (1, 2, 2, 5, 3, 3, 4, 1, 6)] == [
        0,
        0,
        DUPLICATE,
        2,
        0,
        DUPLICATE,
        0,
        DUPLICATE,
        0,
    ]
    assert t.hwm == 6
    assert t.missing == 0
    resumed = SeqTracker(hwm=10)
    assert resumed.offer(10) == DUPLICATE
    assert resumed.offer(12) == 1


@given(st.lists(st.integers(min_value=1, max_value=60), max_size=200))
def test_seq_tracker_accepts_each_seq_exactly_once(seqs: list[int]) -> None:
    t = SeqTracker()
    accepted: list[int] = []
    for s in seqs:
        if t.offer(s) != DUPLICATE:
            accepted.append(s)
    assert len(accepted) == len(set(accepted))  # never twice
    assert set(accepted) <= set(seqs)
    assert len(t.holes) <= MAX_HOLES


@given(st.permutations(list(range(1, 40))))
def test_seq_tracker_any_order_without_loss_when_holes_fit(order: list[int]) -> None:
    t = SeqTracker()
    gaps = 0
    accepted = 0
    for s in order:
        r = t.offer(s)
        assert r != DUPLICATE
        gaps += r
        accepted += 1
    assert accepted == 39
    assert t.missing == 0
    assert t.hwm == 39
    assert gaps >= 0


def test_lifecycle_rules() -> None:
    assert advances("pending", "sent")
    assert advances("pending", "received")
    assert advances("sent", "applied")
    assert not advances("applied", "applied")
    assert not advances("received", "sent")
    assert not advances("applied", "failed")
    assert aggregate(["pending"]) == "pending"
    assert aggregate(["applied", "pending"]) == "pending"
    assert aggregate(["sent", "received"]) == "sent"
    assert aggregate(["applied", "applied"]) == "applied"
    assert aggregate(["applied", "superseded"]) == "applied"
    assert aggregate(["superseded"]) == "superseded"
    # One member applied and in force, the others never took it: short, and cancellable.
    assert aggregate(["applied", "expired", "rejected"]) == "partially_applied"
    assert aggregate(["failed", "rejected"]) == "failed"
    assert aggregate(["completed", "expired", "rejected"]) == "rejected"
    assert advances("applied", "completed")
    assert advances("partially_applied", "cancelling")
    assert advances("cancelling", "cancelled")
    assert not advances("cancelling", "applied")
    assert not advances("completed", "cancelled")


def _parse(body: bytes, **kw: object) -> object:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return parse_dispatch(
        body,
        idempotency_key=kw.get("key"),  # type: ignore[arg-type]
        now=now,
        default_ttl_s=300,
        max_ttl_s=3600,
    )


def test_parse_dispatch() -> None:
    req = _parse(b'{"group_id": "g", "power_kw": -5}')
    assert req.target_kind == "group"
    assert req.power_kw == -5.0
    assert req.expires_at == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=300)
    with pytest.raises(ValidationFailedError) as err:
        _parse(b'{"asset_id": "a", "power_kw": 1, "ttl_s": 7200}')
    assert err.value.field == "ttl_s"
    with pytest.raises(ValidationFailedError) as err:
        _parse(
            b'{"asset_id": "a", "power_kw": 1, "ttl_s": 5, "expires_at": "2026-01-01T00:01:00Z"}'
        )
    assert err.value.field == "expires_at"
    with pytest.raises(BadRequestError):
        _parse(b"{")
    with pytest.raises(ValidationFailedError) as err:
        _parse(b'{"asset_id": "a", "power_kw": 1}', key="x" * 201)
    assert err.value.field == "Idempotency-Key"
    assert not math.isnan(_parse(b'{"site_id": "s", "power_kw": 0}').power_kw)


def test_kv_log_lines() -> None:
    assert kv("connect", site_id="a", assets=3, note="two words", skip=None) == (
        'event=connect site_id=a assets=3 note="two words"'
    )
    assert kv("x", ids=["a", "b"], f=0.5) == "event=x ids=a,b f=0.5"
