"""Rate-limit safety per algorithm model, on hand-built histories.

Times are offsets from T0, an epoch second, so the aligned 1 s windows of the
fixed and sliding window models start at T0, T0 + 1, ...
"""

from __future__ import annotations

import pytest

from pytest_operator._history import History, Op, Outcome
from subjects.ratelimiter.checkers import (
    DEGRADED_DETAIL,
    Algorithm,
    SafetyVerdict,
    check_safety,
    check_safety_by_key,
    max_admitted_in_window,
)

T0 = 1_700_000_000.0
OK, REJ, ERR, TMO = Outcome.OK, Outcome.REJECTED, Outcome.ERROR, Outcome.TIMEOUT
ALL = list(Algorithm)


def op(
    at: float, took: float | None = 0.002, outcome: Outcome = OK, target: str = "n1", key: str = "k"
) -> Op:
    recv = None if took is None else T0 + at + took
    return Op(0, target, key, T0 + at, T0 + at, recv, outcome)


def check(
    ops: list[Op], algorithm: Algorithm, limit: int = 3, window_ms: int = 1000
) -> SafetyVerdict:
    return check_safety(ops, limit=limit, window_ms=window_ms, algorithm=algorithm)


@pytest.mark.parametrize("algorithm", ALL)
def test_empty_history_is_safe(algorithm: Algorithm) -> None:
    verdict = check_safety(History(), limit=3, window_ms=1000, algorithm=algorithm)
    assert verdict.ok
    assert (verdict.admitted_total, verdict.admitted_in_worst, verdict.excess) == (0, 0, 0)
    assert verdict.worst_window_start is None and verdict.by_target == {}
    assert verdict.explain() == f"{algorithm} limit 3 per 1000 ms: ok, nothing admitted"


@pytest.mark.parametrize("algorithm", ALL)
def test_all_blocked_is_safe(algorithm: Algorithm) -> None:
    verdict = check([op(i * 0.01, outcome=REJ) for i in range(50)], algorithm)
    assert verdict.ok and verdict.admitted_total == 0


@pytest.mark.parametrize("algorithm", ALL)
def test_exactly_at_the_limit_is_safe(algorithm: Algorithm) -> None:
    ops = [op(0.40, target="n1"), op(0.45, target="n2"), op(0.50, target="n3")]
    ops += [op(0.55 + i * 0.01, outcome=REJ) for i in range(10)]
    verdict = check(ops, algorithm)
    assert verdict.ok, verdict.explain()
    assert verdict.admitted_in_worst == 3 and verdict.excess == 0
    assert verdict.by_target == {"n1": 1, "n2": 1, "n3": 1}


@pytest.mark.parametrize("algorithm", ALL)
def test_limit_plus_one_in_a_window_is_a_violation(algorithm: Algorithm) -> None:
    ops = [op(0.40, target="n1"), op(0.45, target="n2"), op(0.50, target="n1")]
    ops.append(op(0.60, target="n3"))
    verdict = check(ops, algorithm)
    assert not verdict.ok
    assert verdict.excess >= 1
    assert verdict.by_target["n1"] == 2 and verdict.by_target["n3"] == 1
    assert verdict.worst_window_start is not None and verdict.worst_window_end is not None
    assert verdict.worst_window_start <= T0 + 0.40
    assert verdict.worst_window_end >= T0 + 0.602


def test_limit_plus_one_reports_the_window_and_the_excess_exactly() -> None:
    ops = [op(0.40, target="n1"), op(0.45, target="n2"), op(0.50, target="n1")]
    ops.append(op(0.60, target="n3"))
    verdict = check(ops, Algorithm.SLIDING_LOG)
    assert (verdict.admitted_in_worst, verdict.bound, verdict.excess) == (4, 3, 1)
    assert verdict.worst_window_start == T0 + 0.40
    assert verdict.worst_window_end == T0 + 1.40
    assert verdict.by_target == {"n1": 2, "n2": 1, "n3": 1}
    assert verdict.explain() == (
        "sliding_log limit 3 per 1000 ms: VIOLATED by 1: 4 admitted in "
        "[1700000000.400, 1700000001.400] (1000.0 ms) against a bound of 3 "
        "(by node: n1=2, n2=1, n3=1; 0 more straddled the window); 4 admitted in all, "
        "0 timed out"
    )


@pytest.mark.parametrize("algorithm", [Algorithm.SLIDING_LOG, Algorithm.GCRA])
def test_an_interval_straddling_every_window_is_uncertain_not_counted(
    algorithm: Algorithm,
) -> None:
    # Three quick admissions, and a fourth whose answer came 250 ms later: no window of
    # 1 s holds all four whole intervals, so the server may have been right.
    ops = [op(0.10), op(0.20), op(0.30), op(0.90, took=0.25)]
    verdict = check(ops, algorithm, window_ms=1000)
    if algorithm is Algorithm.SLIDING_LOG:
        assert verdict.ok, verdict.explain()
        assert verdict.admitted_in_worst == 3 and verdict.uncertain == 1
    else:  # gcra: the span [0.10, 0.302] holds 3 against 3 + 0.6: fine as well
        assert verdict.ok, verdict.explain()


@pytest.mark.parametrize("algorithm", ALL)
def test_errors_and_timeouts_never_count_as_admissions(algorithm: Algorithm) -> None:
    ops = [op(0.1), op(0.2), op(0.3)]
    ops += [op(0.4 + i * 0.01, outcome=ERR) for i in range(5)]
    ops += [op(0.5 + i * 0.01, took=None, outcome=TMO) for i in range(5)]
    verdict = check(ops, algorithm)
    assert verdict.ok, verdict.explain()
    assert verdict.admitted_total == 3 and verdict.indeterminate == 5


def test_fixed_window_edge_burst_is_expected_by_the_model() -> None:
    before = [op(0.80 + i * 0.05) for i in range(3)]
    after = [op(1.05 + i * 0.05) for i in range(3)]
    fixed = check(before + after, Algorithm.FIXED_WINDOW)
    assert fixed.ok, fixed.explain()
    assert (fixed.sliding_max, fixed.model_excess) == (6, 3)
    assert fixed.admitted_in_worst == 3 and fixed.bound == 3
    # The same history breaks the exact model.
    exact = check(before + after, Algorithm.SLIDING_LOG)
    assert not exact.ok and exact.excess == 3


def test_fixed_window_over_the_limit_in_one_aligned_window() -> None:
    verdict = check([op(1.1 + i * 0.1) for i in range(4)], Algorithm.FIXED_WINDOW)
    assert not verdict.ok
    assert (verdict.worst_window_start, verdict.worst_window_end) == (T0 + 1.0, T0 + 2.0)
    assert (verdict.admitted_in_worst, verdict.excess) == (4, 1)


def test_fixed_window_more_than_twice_the_limit_across_an_edge_is_a_violation() -> None:
    # 3 + 3 in the two aligned windows, and one straddling the edge (in neither, strictly):
    # a sliding second holds 7 whole admissions, more than the model's 2 x 3.
    ops = [op(0.80 + i * 0.05) for i in range(3)]
    ops.append(op(0.995, took=0.01))
    ops += [op(1.05 + i * 0.05) for i in range(3)]
    verdict = check(ops, Algorithm.FIXED_WINDOW)
    assert not verdict.ok
    assert (verdict.admitted_in_worst, verdict.bound, verdict.excess) == (7, 6, 1)
    assert verdict.model_excess == 3


def test_sliding_window_weights_the_previous_window() -> None:
    full_previous = [op(0.10 + i * 0.1) for i in range(3)]
    early = [op(1.05), op(1.10), op(1.15)]
    verdict = check(full_previous + early, Algorithm.SLIDING_WINDOW)
    # Third admission at elapsed 0.152 s: bound min(3, 3 - 3 * 0.848 + 1) = 1.456.
    assert not verdict.ok
    assert verdict.admitted_in_worst == 3
    assert verdict.bound == pytest.approx(3 - 3 * (1 - 0.152) + 1)
    assert verdict.excess == 2
    assert verdict.worst_window_start == T0 + 1.0
    # The fixed window model allows the same history.
    assert check(full_previous + early, Algorithm.FIXED_WINDOW).ok


def test_sliding_window_allows_a_full_window_late_after_a_full_one() -> None:
    ops = [op(0.10 + i * 0.1) for i in range(3)] + [op(1.90), op(1.92), op(1.94)]
    verdict = check(ops, Algorithm.SLIDING_WINDOW)
    assert verdict.ok, verdict.explain()
    # ...and a full window early after an empty one.
    assert check([op(1.01), op(1.02), op(1.03)], Algorithm.SLIDING_WINDOW).ok


def test_gcra_allows_refill_at_the_rate_that_sliding_log_forbids() -> None:
    # burst of 3, then one every 1/3 s: exactly the token bucket's pace.
    ops = [op(0.0), op(0.001), op(0.002)] + [op(0.01 + k / 3) for k in range(1, 7)]
    gcra = check(ops, Algorithm.GCRA)
    assert gcra.ok, gcra.explain()
    assert not check(ops, Algorithm.SLIDING_LOG).ok
    # One more request squeezed in breaks the bucket.
    broken = check([*ops, op(0.5)], Algorithm.GCRA)
    assert not broken.ok and broken.excess == 1


def test_gcra_burst_over_the_bucket() -> None:
    verdict = check([op(i * 0.001) for i in range(5)], Algorithm.GCRA, limit=3)
    assert not verdict.ok
    assert (verdict.admitted_in_worst, verdict.excess) == (5, 2)
    assert verdict.bound == pytest.approx(3 + (0.006 - 0.0) * 3)


def test_keys_are_judged_separately() -> None:
    ops = [op(0.1 + i * 0.01, key="a") for i in range(3)]
    ops += [op(0.1 + i * 0.01, key="b") for i in range(4)]
    with pytest.raises(ValueError) as info:
        check(ops, Algorithm.SLIDING_LOG)
    assert str(info.value) == ("the history holds 2 keys; pass key=..., or use check_safety_by_key")
    verdicts = check_safety_by_key(ops, limit=3, window_ms=1000, algorithm="sliding_log")
    assert verdicts["a"].ok and not verdicts["b"].ok
    assert verdicts["b"].key == "b"
    assert check_safety(ops, limit=3, window_ms=1000, algorithm="gcra", key="a").ok


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError) as info:
        check_safety([], limit=3, window_ms=1000, algorithm="token_bucket")
    assert str(info.value) == (
        "unknown algorithm 'token_bucket' (valid: sliding_log, sliding_window, fixed_window, gcra)"
    )
    with pytest.raises(ValueError, match=r"^limit must be >= 1, got 0$"):
        check_safety([], limit=0, window_ms=1000, algorithm="gcra")


def test_max_admitted_in_window_for_the_monitor() -> None:
    ops = [op(0.1, target="n1"), op(0.2, target="n2"), op(0.3, outcome=REJ), op(0.4)]
    worst = max_admitted_in_window(ops, 1.0)
    assert worst is not None
    assert (worst.count, worst.by_target) == (3, {"n1": 2, "n2": 1})
    assert max_admitted_in_window([op(0.1, outcome=ERR)], 1.0) is None


def test_the_busiest_window_says_what_it_held() -> None:
    degraded = Op(0, "n2", "k", T0 + 0.5, T0 + 0.5, T0 + 0.502, OK, DEGRADED_DETAIL)
    ops = [op(0.1, target="n1"), op(0.2, target="n1"), degraded]
    worst = max_admitted_in_window(ops, 1.0)
    assert worst is not None
    assert (worst.count, worst.degraded) == (3, 1)
    assert worst.describe() == "by node: n1 2, n2 1; 1 by nodes in degraded mode"
    normal = max_admitted_in_window(ops[:2], 1.0)
    assert normal is not None and normal.describe() == "by node: n1 2"
