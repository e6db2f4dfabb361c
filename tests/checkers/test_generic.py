"""The generic checkers on hand-built histories, and the admission counters against brute force."""

from __future__ import annotations

import random

import pytest

from pytest_operator._checkers import (
    availability,
    inside,
    latency,
    max_in_window,
    max_over_rate,
)
from pytest_operator._history import History, Op, Outcome

OK, REJ, ERR, TMO = Outcome.OK, Outcome.REJECTED, Outcome.ERROR, Outcome.TIMEOUT


def op(send: float, recv: float | None, outcome: Outcome = OK, target: str = "n1") -> Op:
    return Op(0, target, "k", send, send, recv, outcome)


def test_availability_counts_and_rates_per_target() -> None:
    ops = [
        *(op(i, i + 0.01, OK, "n1") for i in range(6)),
        op(7, 7.01, REJ, "n1"),
        op(8, 8.01, ERR, "n1"),
        op(9, None, TMO, "n1"),
        op(1, None, TMO, "n2"),
        op(2, None, TMO, "n2"),
    ]
    report = availability(History(ops))
    n1, n2 = report.by_target["n1"], report.by_target["n2"]
    assert (n1.total, n1.ok, n1.rejected, n1.errors, n1.timeouts) == (9, 6, 1, 1, 1)
    assert n1.error_rate == pytest.approx(1 / 9)
    assert n1.timeout_rate == pytest.approx(1 / 9)
    assert n1.failure_rate == pytest.approx(2 / 9)
    assert (n2.total, n2.timeouts, n2.timeout_rate, n2.error_rate) == (2, 2, 1.0, 0.0)
    assert report.overall.total == 11 and report.overall.failure_rate == pytest.approx(4 / 11)


def test_availability_of_an_empty_history() -> None:
    report = availability(History())
    assert report.by_target == {}
    assert (report.overall.total, report.overall.error_rate) == (0, 0.0)


def test_latency_percentiles_are_nearest_rank_over_answered_ops() -> None:
    ops = [op(10.0, 10.0 + ms / 1000, OK if ms % 2 else REJ, "n1") for ms in range(1, 101)]
    ops += [op(20.0, 25.0, ERR, "n1"), op(20.0, None, TMO, "n1")]  # excluded by default
    ops += [op(30.0, 30.5, OK, "n2")]
    report = latency(ops)
    n1 = report.by_target["n1"]
    assert n1.count == 100
    assert (n1.p50, n1.p90, n1.p99, n1.max) == pytest.approx((0.050, 0.090, 0.099, 0.100))
    assert report.by_target["n2"].p99 == pytest.approx(0.5)
    assert report.overall.count == 101
    with_errors = latency(ops, outcomes=[ERR])
    assert with_errors.by_target["n1"].max == pytest.approx(5.0)
    assert "n2" not in with_errors.by_target


def test_max_in_window_on_an_empty_history_and_on_timeouts_only() -> None:
    assert max_in_window([], 1.0).count == 0
    only_timeouts = max_in_window([op(1.0, None, TMO), op(1.1, None, TMO)], 1.0)
    assert (only_timeouts.count, only_timeouts.start, only_timeouts.ops) == (0, None, ())


def test_max_in_window_is_half_open_and_strict() -> None:
    ops = [op(0.0, 0.01), op(0.5, 0.51), op(1.0, 1.01), op(1.2, 1.21)]
    worst = max_in_window(ops, 1.0)
    assert worst.count == 3  # 0.5, 1.0, 1.2: [0.0, 1.0) holds only two whole ops
    assert worst.start == 0.5 and worst.end == 1.5
    assert [o.send for o in worst.ops] == [0.5, 1.0, 1.2]
    # An op whose interval straddles every candidate window is never counted.
    straddler = [op(0.0, 0.01), op(0.2, 1.3), op(0.9, 0.91)]
    assert max_in_window(straddler, 1.0).count == 2
    # An op slower than the window fits no window at all.
    assert max_in_window([op(0.0, 1.0)], 1.0).count == 0


def test_max_in_window_rejects_a_bad_window() -> None:
    with pytest.raises(ValueError, match=r"^window_s must be > 0, got 0$"):
        max_in_window([], 0)


def test_max_over_rate_finds_a_burst_beyond_refill() -> None:
    burst = [op(0.0 + i * 0.001, 0.0 + i * 0.001 + 0.002) for i in range(5)]
    later = [op(3.0, 3.01)]
    worst = max_over_rate(burst + later, rate=1.0)
    assert worst.count == 5
    assert worst.start == 0.0 and worst.end == pytest.approx(0.006)
    assert worst.excess == pytest.approx(5 - 0.006)
    assert max_over_rate([], 1.0).count == 0


def _random_ops(rng: random.Random) -> list[Op]:
    ops = []
    for _ in range(rng.randrange(1, 30)):
        send = round(rng.uniform(0, 5), 2)
        recv = None if rng.random() < 0.1 else send + round(rng.uniform(0, 1.5), 2)
        ops.append(op(send, recv))
    return ops


@pytest.mark.parametrize("seed", range(40))
def test_max_in_window_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    ops = _random_ops(rng)
    window = rng.choice([0.25, 0.5, 1.0, 2.0])
    brute = max((len(inside(ops, o.send, o.send + window)) for o in ops), default=0)
    assert max_in_window(ops, window).count == brute


@pytest.mark.parametrize("seed", range(40))
def test_max_over_rate_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    ops = _random_ops(rng)
    rate = rng.choice([0.0, 1.0, 3.0, 10.0])
    spans = [(a.send, b.recv) for a in ops for b in ops if b.recv is not None and b.recv >= a.send]
    brute = max(
        (len(inside(ops, s, e, closed=True)) - rate * (e - s) for s, e in spans), default=0.0
    )
    got = max_over_rate(ops, rate)
    # Spans holding no op score 0 at best, so only positive maxima must agree exactly.
    assert max(got.excess, 0.0) == pytest.approx(max(brute, 0.0))
    if got.start is not None and got.end is not None:
        assert got.count == len(inside(ops, got.start, got.end, closed=True))
