"""Rate-limit safety, judged from the history: did the cluster admit more than its model allows?

Only ``ok`` ops (allowed) count as admissions; rejected, error and timeout ops
never do. Counting is strict (see pytest_operator._checkers): an admission
counts in a window only when its whole ``[send, recv]`` lies inside, so a
reported violation is certain, while admissions straddling the worst window's
edges are reported as ``uncertain``. A timeout may have been admitted; those are
counted as ``indeterminate`` and never as admissions.

The bound each algorithm's model promises, in a window of length W = window_ms:

- ``sliding_log`` (exact): at most ``limit`` in every window ``[t, t + W)``.
- ``fixed_window``: at most ``limit`` in every aligned window
  ``[k W, (k + 1) W)`` (aligned to the epoch clock, as the limiter aligns
  them). Across an edge a sliding W may see up to ``2 limit``: the excess over
  ``limit`` in a sliding W is reported as ``model_excess``, expected by the
  model, and only more than ``2 limit`` is a violation.
- ``sliding_window`` (two-counter estimate ``prev * (1 - elapsed / W) + curr``,
  admitted while the estimate plus the cost stays within ``limit``): in aligned
  window k, the m-th admission (ordered by recv, elapsed x = recv - start of
  window k) must satisfy ``m <= min(limit, limit - P * (1 - x / W) + 1)``, with P
  the admissions strictly inside window k-1. Why it holds: the limiter's prev
  count is at least P, its decision came no later than recv so its weight on
  prev was at least ``1 - x / W``, and the current counter never passes
  ``limit``; the ``+ 1`` absorbs rounding of the weighted estimate (a limiter
  may floor it). Any sliding W is also held to ``2 limit``, and the excess over
  ``limit`` there is ``model_excess``, as for fixed windows.
- ``gcra`` (token bucket, burst = ``limit``, refilled at ``limit / W``): in any
  span ``[t1, t2]`` at most ``limit + (t2 - t1) * limit / W`` admissions; the
  worst span is the one with the largest count beyond refill.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_operator._checkers import max_in_window, max_over_rate, overlapping
from pytest_operator._history import History, Op, Outcome

_EPS = 1e-9
DEGRADED_DETAIL = "mode=degraded"
"""The detail the client records on a decision a node made in degraded mode."""


class Algorithm(enum.StrEnum):
    SLIDING_LOG = "sliding_log"
    SLIDING_WINDOW = "sliding_window"
    FIXED_WINDOW = "fixed_window"
    GCRA = "gcra"


@dataclass(frozen=True, slots=True)
class SafetyVerdict:
    """Whether the admissions for one key stayed within the algorithm's model.

    The worst window is the one furthest over (or nearest to) its ``bound``;
    ``admitted_in_worst`` admissions lay wholly inside it, ``uncertain`` more
    overlapped it, ``by_target`` says which nodes admitted the counted ones,
    and ``excess`` is how many the count went over the bound (0 when ok).
    ``sliding_max`` is the most admissions in any sliding window of length W;
    ``model_excess`` the part of it over ``limit`` that the model permits
    (fixed_window, sliding_window; 0 for the exact models).
    """

    ok: bool
    algorithm: Algorithm
    limit: int
    window_ms: int
    key: str | None
    worst_window_start: float | None
    worst_window_end: float | None
    admitted_in_worst: int
    bound: float
    excess: int
    by_target: dict[str, int]
    uncertain: int
    admitted_total: int
    indeterminate: int
    sliding_max: int
    model_excess: int

    def explain(self) -> str:
        """One line for a failure message or a report."""
        subject = f"key {self.key!r}, " if self.key is not None else ""
        head = f"{self.algorithm} {subject}limit {self.limit} per {self.window_ms} ms"
        if self.worst_window_start is None or self.worst_window_end is None:
            return f"{head}: ok, nothing admitted"
        span = (
            f"[{self.worst_window_start:.3f}, {self.worst_window_end:.3f}] "
            f"({(self.worst_window_end - self.worst_window_start) * 1000:.1f} ms)"
        )
        nodes = ", ".join(f"{t}={n}" for t, n in sorted(self.by_target.items())) or "none"
        verdict = "ok" if self.ok else f"VIOLATED by {self.excess}"
        return (
            f"{head}: {verdict}: {self.admitted_in_worst} admitted in {span} "
            f"against a bound of {self.bound:g} (by node: {nodes}; {self.uncertain} more "
            f"straddled the window); {self.admitted_total} admitted in all, "
            f"{self.indeterminate} timed out"
            + (f"; model permits {self.model_excess} over the limit" if self.model_excess else "")
        )


def check_safety(
    history: History | Iterable[Op],
    *,
    limit: int,
    window_ms: int,
    algorithm: Algorithm | str,
    key: str | None = None,
) -> SafetyVerdict:
    """Judge one key's admissions (``key=None``: the history must hold one key only)."""
    model = _algorithm(algorithm)
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    if window_ms < 1:
        raise ValueError(f"window_ms must be >= 1, got {window_ms!r}")
    ops = history.snapshot() if isinstance(history, History) else tuple(history)
    if key is None:
        keys = {op.key for op in ops}
        if len(keys) > 1:
            raise ValueError(
                f"the history holds {len(keys)} keys; pass key=..., or use check_safety_by_key"
            )
    else:
        ops = tuple(op for op in ops if op.key == key)
    admitted = [op for op in ops if op.outcome is Outcome.OK]
    timeouts = sum(1 for op in ops if op.outcome is Outcome.TIMEOUT)
    checker = _CHECKERS[model]
    return checker(admitted, limit, window_ms, key, timeouts)


def check_safety_by_key(
    history: History | Iterable[Op],
    *,
    limit: int,
    window_ms: int,
    algorithm: Algorithm | str,
) -> dict[str, SafetyVerdict]:
    """:func:`check_safety` for every key in the history (all under the same limit)."""
    ops = history.snapshot() if isinstance(history, History) else tuple(history)
    grouped: dict[str, list[Op]] = {}
    for op in ops:
        grouped.setdefault(op.key, []).append(op)
    return {
        k: check_safety(grouped[k], limit=limit, window_ms=window_ms, algorithm=algorithm, key=k)
        for k in sorted(grouped)
    }


def _algorithm(value: Algorithm | str) -> Algorithm:
    try:
        return Algorithm(value)
    except ValueError:
        valid = ", ".join(a.value for a in Algorithm)
        raise ValueError(f"unknown algorithm {value!r} (valid: {valid})") from None


def _by_target(ops: Iterable[Op]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.target] = counts.get(op.target, 0) + 1
    return dict(sorted(counts.items()))


def _verdict(
    algorithm: Algorithm,
    admitted: Sequence[Op],
    limit: int,
    window_ms: int,
    key: str | None,
    timeouts: int,
    *,
    start: float | None,
    end: float | None,
    counted: Sequence[Op],
    bound: float,
    sliding_max: int,
    model_excess: int,
    extra_violation: bool = False,
) -> SafetyVerdict:
    excess = max(0, len(counted) - math.floor(bound + _EPS))
    uncertain = 0
    if start is not None and end is not None:
        uncertain = len(overlapping(admitted, start, end)) - len(counted)
    return SafetyVerdict(
        ok=excess == 0 and not extra_violation,
        algorithm=algorithm,
        limit=limit,
        window_ms=window_ms,
        key=key,
        worst_window_start=start,
        worst_window_end=end,
        admitted_in_worst=len(counted),
        bound=bound,
        excess=excess,
        by_target=_by_target(counted),
        uncertain=uncertain,
        admitted_total=len(admitted),
        indeterminate=timeouts,
        sliding_max=sliding_max,
        model_excess=model_excess,
    )


def _sliding_log(
    admitted: Sequence[Op], limit: int, window_ms: int, key: str | None, timeouts: int
) -> SafetyVerdict:
    worst = max_in_window(admitted, window_ms / 1000.0)
    return _verdict(
        Algorithm.SLIDING_LOG,
        admitted,
        limit,
        window_ms,
        key,
        timeouts,
        start=worst.start,
        end=worst.end,
        counted=worst.ops,
        bound=limit,
        sliding_max=worst.count,
        model_excess=0,
    )


def _aligned(admitted: Sequence[Op], window_ms: int) -> dict[int, list[Op]]:
    """Admissions wholly inside one aligned window, by window number (straddlers left out)."""
    windows: dict[int, list[Op]] = {}
    for op in admitted:
        assert op.recv is not None  # ok ops always have a recv
        k = math.floor(op.send * 1000.0 / window_ms)
        if math.floor(op.recv * 1000.0 / window_ms) == k:
            windows.setdefault(k, []).append(op)
    return windows


def _window_bounds(k: int, window_ms: int) -> tuple[float, float]:
    return k * window_ms / 1000.0, (k + 1) * window_ms / 1000.0


def _two_window_models(
    algorithm: Algorithm,
    admitted: Sequence[Op],
    limit: int,
    window_ms: int,
    key: str | None,
    timeouts: int,
) -> SafetyVerdict:
    """fixed_window and sliding_window: aligned windows, plus the 2x sliding cap."""
    sliding = max_in_window(admitted, window_ms / 1000.0)
    model_excess = max(0, min(sliding.count, 2 * limit) - limit)
    windows = _aligned(admitted, window_ms)
    # The worst prefix of an aligned window: (count - bound, count, start, end, ops, bound).
    best: tuple[float, int, float, float, tuple[Op, ...], float] | None = None
    for k in sorted(windows):
        ops = sorted(windows[k], key=lambda op: op.recv or 0.0)
        start, end = _window_bounds(k, window_ms)
        if algorithm is Algorithm.FIXED_WINDOW:
            candidates = [(end, len(ops), float(limit))]
        else:
            prev = len(windows.get(k - 1, ()))
            candidates = []
            for m, op in enumerate(ops, start=1):
                assert op.recv is not None
                weight = 1.0 - (op.recv - start) / (window_ms / 1000.0)
                candidates.append((op.recv, m, min(float(limit), limit - prev * weight + 1.0)))
        for c_end, count, bound in candidates:
            entry = (count - bound, count, start, c_end, tuple(ops[:count]), bound)
            if best is None or entry[:2] > best[:2]:
                best = entry
    over_cap = sliding.count > 2 * limit
    aligned_excess = best is not None and best[1] > math.floor(best[5] + _EPS)
    if best is None or (over_cap and not aligned_excess):
        # Nothing wholly inside an aligned window, or only the 2x cap broken: report the
        # busiest sliding window against the cap.
        return _verdict(
            algorithm,
            admitted,
            limit,
            window_ms,
            key,
            timeouts,
            start=sliding.start,
            end=sliding.end,
            counted=sliding.ops,
            bound=2 * limit,
            sliding_max=sliding.count,
            model_excess=model_excess,
        )
    _, _, start, end, counted, bound = best
    return _verdict(
        algorithm,
        admitted,
        limit,
        window_ms,
        key,
        timeouts,
        start=start,
        end=end,
        counted=counted,
        bound=bound,
        sliding_max=sliding.count,
        model_excess=model_excess,
        extra_violation=over_cap,
    )


def _fixed_window(
    admitted: Sequence[Op], limit: int, window_ms: int, key: str | None, timeouts: int
) -> SafetyVerdict:
    return _two_window_models(Algorithm.FIXED_WINDOW, admitted, limit, window_ms, key, timeouts)


def _sliding_window(
    admitted: Sequence[Op], limit: int, window_ms: int, key: str | None, timeouts: int
) -> SafetyVerdict:
    return _two_window_models(Algorithm.SLIDING_WINDOW, admitted, limit, window_ms, key, timeouts)


def _gcra(
    admitted: Sequence[Op], limit: int, window_ms: int, key: str | None, timeouts: int
) -> SafetyVerdict:
    rate = limit / (window_ms / 1000.0)
    worst = max_over_rate(admitted, rate)
    sliding = max_in_window(admitted, window_ms / 1000.0)
    span = 0.0 if worst.start is None or worst.end is None else worst.end - worst.start
    return _verdict(
        Algorithm.GCRA,
        admitted,
        limit,
        window_ms,
        key,
        timeouts,
        start=worst.start,
        end=worst.end,
        counted=worst.ops,
        bound=limit + span * rate,
        sliding_max=sliding.count,
        model_excess=0,
    )


@dataclass(frozen=True, slots=True)
class AdmittedWindow:
    """The busiest window of admissions: ``count`` wholly inside ``[start, end)``."""

    count: int
    start: float
    end: float
    by_target: dict[str, int]
    degraded: int = 0
    """Admissions a node made in degraded mode (``mode=degraded``: it could not reach the
    store, and fail-open admits without counting)."""

    def describe(self) -> str:
        """What the window held, for a violation's detail."""
        nodes = ", ".join(f"{t} {n}" for t, n in self.by_target.items())
        note = f"; {self.degraded} by nodes in degraded mode" if self.degraded else ""
        return f"by node: {nodes}{note}"


def max_admitted_in_window(ops: Iterable[Op], window_s: float) -> AdmittedWindow | None:
    """The window of length ``window_s`` with the most admissions (``ok`` ops), strictly
    counted; None when no admission fits a window. A quick check for a monitor loop; use
    :func:`check_safety` for a verdict against an algorithm's model."""
    worst = max_in_window([op for op in ops if op.outcome is Outcome.OK], window_s)
    if worst.start is None or worst.end is None:
        return None
    degraded = sum(1 for op in worst.ops if op.detail == DEGRADED_DETAIL)
    return AdmittedWindow(worst.count, worst.start, worst.end, _by_target(worst.ops), degraded)


_CHECKERS = {
    Algorithm.SLIDING_LOG: _sliding_log,
    Algorithm.FIXED_WINDOW: _fixed_window,
    Algorithm.SLIDING_WINDOW: _sliding_window,
    Algorithm.GCRA: _gcra,
}
