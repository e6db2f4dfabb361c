"""What a monitor makes of the client history (``client_seen``, which both subjects'
observers use): per target, the share of requests that failed or timed out in the last
second (a timeout counted when the client gave up on it, not when it was sent), and the p99
latency of those answered; and the rate limiter's safety violations from that history."""

from __future__ import annotations

import pytest

from pytest_operator._checkers import MIN_CLIENT_SAMPLE, client_seen
from pytest_operator._history import History, Op, Outcome
from subjects.ratelimiter.observe import RateLimiterObserver

NOW = 1_000_000.0


def _op(i: int, target: str, send: float, outcome: Outcome, *, latency: float | None = 0.005,
        gave_up: float | None = None) -> Op:  # fmt: skip
    recv = None if latency is None else send + latency
    return Op(i, target, "k", send, send, recv, outcome, gave_up=gave_up)


def test_timeouts_count_when_the_client_gave_up() -> None:
    # node-2's requests were sent 2.5 s ago and given up on after 2 s: they resolved half a
    # second ago, inside the one-second span, and every one of them failed
    hung = [
        _op(i, "node-2", NOW - 2.5 + i * 0.01, Outcome.TIMEOUT, latency=None, gave_up=2.0)
        for i in range(10)
    ]
    fine = [_op(100 + i, "node-1", NOW - 0.5 + i * 0.01, Outcome.OK) for i in range(10)]
    seen = client_seen([*hung, *fine], NOW)
    assert seen["node-2"].error_rate == 1.0
    assert seen["node-2"].latency_p99_ms is None  # nothing was answered
    assert seen["node-1"].error_rate == 0.0
    assert seen["node-1"].latency_p99_ms == pytest.approx(5.0)


def test_a_timeout_of_unknown_length_is_dated_at_its_send() -> None:
    old = [_op(i, "node-2", NOW - 2.5 + i * 0.01, Outcome.TIMEOUT, latency=None) for i in range(10)]
    assert "node-2" not in client_seen(old, NOW)


def test_too_few_requests_say_nothing() -> None:
    few = [
        _op(i, "node-3", NOW - 0.5, Outcome.ERROR, latency=0.001)
        for i in range(MIN_CLIENT_SAMPLE - 1)
    ]
    assert client_seen(few, NOW) == {}


def test_p99_is_of_answered_requests() -> None:
    ops = [_op(i, "node-1", NOW - 0.9 + i * 0.005, Outcome.OK, latency=0.010) for i in range(99)]
    ops.append(_op(99, "node-1", NOW - 0.9, Outcome.REJECTED, latency=0.600))
    ops.append(_op(100, "node-1", NOW - 0.9, Outcome.ERROR, latency=0.900))  # not answered
    seen = client_seen(ops, NOW)["node-1"]
    assert seen.latency_p99_ms == pytest.approx(600.0)
    assert seen.error_rate == pytest.approx(1 / 101)


async def _over_limit(history: History) -> list[str]:
    from subjects.ratelimiter.observe import CounterView, _NodeProbe

    probe = _NodeProbe("node-1", counters=[CounterView("k1", 0, 100, 1000, "sliding_log", "redis")])
    now = history.clock.now()
    ops = [
        Op(
            i,
            "node-1",
            "k1",
            now - 0.9 + i * 0.005,
            now - 0.9 + i * 0.005,
            now - 0.9 + i * 0.005 + 0.001,
            Outcome.OK,
        )
        for i in range(101)
    ]
    obs = RateLimiterObserver({"node-1": "http://127.0.0.1:9"}, "127.0.0.1:9", history)
    try:
        return [v.detail for v in obs._safety([probe], ops, now)]
    finally:
        await obs.aclose()


async def test_a_safety_violation_says_when_the_wall_clock_drifted() -> None:
    """Redis decides by its wall clock, the history is dated by the monotonic clock: when
    the two drift apart, the violation says by how much (and not otherwise)."""
    history = History()
    assert abs(history.clock.drift()) < 0.05
    assert await _over_limit(history) == [
        "101 admitted in 1000 ms for key 'k1' (limit 100); by node: node-1 101"
    ]
    history.clock._wall0 -= 0.020  # the wall clock has run 20 ms ahead since the anchor
    assert history.clock.drift() == pytest.approx(0.020, abs=0.005)
    (detail,) = await _over_limit(history)
    assert detail.startswith(
        "101 admitted in 1000 ms for key 'k1' (limit 100); by node: node-1 101; the wall clock"
    )
    assert "drifted +2" in detail and detail.endswith(" ms from the history's clock")
