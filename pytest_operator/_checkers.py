"""Generic history checkers: pure functions over ops, judging what clients saw.

Availability and latency are per target. The admission counters
(:func:`max_in_window`, :func:`max_over_rate`) are the building blocks of a
subject's safety checker ("no more than N admitted in any window").

Clocks, honestly: a client does not know when the subject decided a request,
only that it decided somewhere between ``send`` and ``recv``. Counters here
are *strict*: an op counts in a window only when its whole ``[send, recv]``
interval lies inside it, so it was surely decided inside. A strict count never
exceeds the true count, so a limit exceeded by a strict count was exceeded for
real (no false positives); the price is that ops straddling a window's edge are
left out (a violation can be missed, never invented). Ops without ``recv``
(timeouts) never count. Callers report the straddlers as ``uncertain`` where it
helps the reader.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_operator._history import History, Op, Outcome
from pytest_operator._workload import percentile

ANSWERED = frozenset((Outcome.OK, Outcome.REJECTED))
CLIENT_SEEN_SPAN = 1.0
"""Seconds of client history behind a target's client-seen error rate."""
MIN_CLIENT_SAMPLE = 5
"""Fewer requests than this to a target in the span say nothing about it."""


def _ops(history: History | Iterable[Op]) -> Sequence[Op]:
    return history.snapshot() if isinstance(history, History) else tuple(history)


# ---------------------------------------------------------------- availability


@dataclass(frozen=True, slots=True)
class Availability:
    """Outcome counts for one target (``"*"`` for all of them) and the failure rates."""

    target: str
    total: int
    ok: int
    rejected: int
    errors: int
    timeouts: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.total if self.total else 0.0

    @property
    def timeout_rate(self) -> float:
        return self.timeouts / self.total if self.total else 0.0

    @property
    def failure_rate(self) -> float:
        """Errors and timeouts together: requests that got no decision."""
        return (self.errors + self.timeouts) / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class AvailabilityReport:
    by_target: dict[str, Availability]
    overall: Availability


def _availability(target: str, ops: Sequence[Op]) -> Availability:
    counts = dict.fromkeys(Outcome, 0)
    for op in ops:
        counts[op.outcome] += 1
    return Availability(
        target=target,
        total=len(ops),
        ok=counts[Outcome.OK],
        rejected=counts[Outcome.REJECTED],
        errors=counts[Outcome.ERROR],
        timeouts=counts[Outcome.TIMEOUT],
    )


def availability(history: History | Iterable[Op]) -> AvailabilityReport:
    """Error and timeout rates per target, and over all targets."""
    ops = _ops(history)
    grouped: dict[str, list[Op]] = {}
    for op in ops:
        grouped.setdefault(op.target, []).append(op)
    return AvailabilityReport(
        by_target={t: _availability(t, grouped[t]) for t in sorted(grouped)},
        overall=_availability("*", ops),
    )


# ---------------------------------------------------------------- latency


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency percentiles (nearest rank), seconds, over ``count`` ops of one target."""

    target: str
    count: int
    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True, slots=True)
class LatencyReport:
    by_target: dict[str, Latency]
    overall: Latency


def _latency(target: str, values: list[float]) -> Latency:
    values.sort()
    return Latency(
        target=target,
        count=len(values),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        max=values[-1] if values else 0.0,
    )


def latency(
    history: History | Iterable[Op], *, outcomes: Iterable[Outcome] = ANSWERED
) -> LatencyReport:
    """Latency p50/p90/p99/max per target, over ops with the given outcomes.

    By default only answered ops (ok, rejected): a refused connection fails in
    microseconds and would flatter the percentiles; timeouts have no latency.
    """
    wanted = frozenset(outcomes)
    grouped: dict[str, list[float]] = {}
    everything: list[float] = []
    for op in _ops(history):
        if op.recv is None or op.outcome not in wanted:
            continue
        grouped.setdefault(op.target, []).append(op.recv - op.send)
        everything.append(op.recv - op.send)
    return LatencyReport(
        by_target={t: _latency(t, grouped[t]) for t in sorted(grouped)},
        overall=_latency("*", everything),
    )


# ---------------------------------------------------------------- admission counters


@dataclass(frozen=True, slots=True)
class WindowCount:
    """The busiest window: ``count`` ops lay wholly inside ``[start, end)``.

    ``start``/``end`` are None when no op fits any window.
    """

    count: int
    start: float | None
    end: float | None
    ops: tuple[Op, ...]


def inside(ops: Iterable[Op], start: float, end: float, *, closed: bool = False) -> tuple[Op, ...]:
    """Ops whose whole ``[send, recv]`` lies in ``[start, end)`` (``[start, end]`` if closed)."""
    if closed:
        return tuple(
            op for op in ops if op.recv is not None and start <= op.send and op.recv <= end
        )
    return tuple(op for op in ops if op.recv is not None and start <= op.send and op.recv < end)


def overlapping(ops: Iterable[Op], start: float, end: float) -> tuple[Op, ...]:
    """Ops whose ``[send, recv]`` (recv unknown: open-ended) meets ``[start, end)``."""
    return tuple(op for op in ops if op.send < end and (op.recv is None or op.recv >= start))


def max_in_window(ops: Iterable[Op], window_s: float) -> WindowCount:
    """The most ops lying wholly inside any window ``[t, t + window_s)``, strictly counted.

    An op fits a window starting at t iff ``recv - window_s < t <= send``; the
    busiest t is found by a sweep over those intervals, O(n log n).
    """
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    candidates = [op for op in ops if op.recv is not None and op.recv - op.send < window_s]
    # Each op covers the half-open range of starts (recv - window_s, send]: an event
    # "close" at send (inclusive: still counted at that t) and "open" just after
    # recv - window_s. At equal coordinates, closes are processed first.
    events: list[tuple[float, int]] = []
    for op in candidates:
        assert op.recv is not None
        events.append((op.recv - window_s, 1))
        events.append((op.send, 0))
    events.sort()
    active = best = 0
    best_t: float | None = None
    for t, kind in events:
        if kind == 0:
            if active > best:
                best, best_t = active, t
            active -= 1
        else:
            active += 1
    if best_t is None:
        return WindowCount(0, None, None, ())
    counted = inside(candidates, best_t, best_t + window_s)
    return WindowCount(len(counted), best_t, best_t + window_s, counted)


@dataclass(frozen=True, slots=True)
class SpanExcess:
    """The span ``[start, end]`` where ``count - rate * (end - start)`` is largest.

    ``count`` ops lie wholly inside it; ``excess = count - rate * (end - start)``.
    """

    count: int
    start: float | None
    end: float | None
    excess: float
    ops: tuple[Op, ...]


def max_over_rate(ops: Iterable[Op], rate: float) -> SpanExcess:
    """Maximise, over spans ``[t1, t2]``, the strict count minus ``rate * (t2 - t1)``.

    This is the token bucket's question: a bucket of ``burst`` tokens refilled
    at ``rate`` admits at most ``burst + rate * (t2 - t1)`` in any span, so it
    was broken iff this maximum exceeds ``burst``. O(n log n): spans start at a
    send and end at a recv; for each start (descending) a segment tree over the
    recv order keeps ``count(recv <= t2) - rate * t2`` and gives its maximum.
    """
    if not (rate >= 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
    items = [op for op in ops if op.recv is not None]
    if not items:
        return SpanExcess(0, None, None, 0.0, ())
    origin = min(op.send for op in items)
    sends = [op.send - origin for op in items]
    recvs = [op.recv - origin for op in items if op.recv is not None]
    by_recv = sorted(range(len(items)), key=lambda i: recvs[i])
    position = [0] * len(items)
    for pos, i in enumerate(by_recv):
        position[i] = pos
    tree = _MaxAddTree(len(items))
    best_excess = -math.inf
    best = (0, 0)  # indices of the ops whose send starts and recv ends the best span
    order = sorted(range(len(items)), key=lambda i: -sends[i])
    k = 0
    while k < len(order):
        t1 = sends[order[k]]
        while k < len(order) and sends[order[k]] == t1:
            i = order[k]
            tree.add_suffix(position[i], 1.0)
            tree.activate(position[i], -rate * recvs[i])
            k += 1
        value = tree.max() + rate * t1
        if value > best_excess:
            best_excess = value
            best = (order[k - 1], by_recv[tree.argmax()])
    start, end = items[best[0]].send, items[best[1]].recv
    assert end is not None
    counted = inside(items, start, end, closed=True)
    return SpanExcess(len(counted), start, end, len(counted) - rate * (end - start), counted)


class _MaxAddTree:
    """Leaves hold ``count + base`` once activated (-inf before); suffix add; global max.

    ``add[i]`` is pending for node i's subtree and included in ``mx[i]``; a leaf's
    ``add`` also accumulates while inactive, so activation knows its count.
    """

    __slots__ = ("add", "mx", "size")

    def __init__(self, n: int) -> None:
        self.size = 1
        while self.size < n:
            self.size *= 2
        self.mx = [-math.inf] * (2 * self.size)
        self.add = [0.0] * (2 * self.size)

    def _pull(self, i: int) -> None:
        mx, add = self.mx, self.add
        while i > 1:
            i //= 2
            mx[i] = max(mx[2 * i], mx[2 * i + 1]) + add[i]

    def add_suffix(self, lo: int, value: float) -> None:
        mx, add = self.mx, self.add
        left, right = lo + self.size, 2 * self.size
        first, last = left, right - 1
        while left < right:
            if left & 1:
                mx[left] += value
                add[left] += value
                left += 1
            if right & 1:
                right -= 1
                mx[right] += value
                add[right] += value
            left //= 2
            right //= 2
        self._pull(first)
        self._pull(last)

    def activate(self, pos: int, base: float) -> None:
        """Give leaf ``pos`` the value ``(adds it has received) + base``."""
        i = pos + self.size
        self.mx[i] = self.add[i] + base
        self._pull(i)

    def max(self) -> float:
        return self.mx[1]

    def argmax(self) -> int:
        i, mx = 1, self.mx
        while i < self.size:
            i = 2 * i if mx[2 * i] >= mx[2 * i + 1] else 2 * i + 1
        return i - self.size


# ---------------------------------------------------------------- client-seen, for monitors


@dataclass(frozen=True, slots=True)
class ClientSeen:
    """One target as its clients saw it over the last span (from the history)."""

    error_rate: float
    latency_p99_ms: float | None


def client_seen(
    history: Sequence[Op],
    now: float,
    *,
    span: float = CLIENT_SEEN_SPAN,
    min_sample: int = MIN_CLIENT_SAMPLE,
) -> dict[str, ClientSeen]:
    """Per target, what clients saw of it over the ``span`` seconds before ``now``: the share
    of requests that failed or timed out (a timeout counts when the client gave up on it,
    :attr:`Op.resolved`; one of unknown length when it was sent), and the p99 latency of
    those answered. Targets with fewer than ``min_sample`` requests are left out. A quick
    check for a monitor loop: it walks the history from the end and stops well past
    the span."""
    since = now - span
    counts: dict[str, list[int]] = {}
    latencies: dict[str, list[float]] = {}
    for op in reversed(history):
        resolved = op.resolved if op.resolved is not None else op.send
        if resolved < since - 10.0:  # ops resolve roughly in order; stop well past
            break
        if resolved < since or resolved > now:
            continue
        c = counts.setdefault(op.target, [0, 0])
        c[0] += 1
        c[1] += op.outcome in (Outcome.ERROR, Outcome.TIMEOUT)
        if op.recv is not None and op.outcome in ANSWERED:
            latencies.setdefault(op.target, []).append((op.recv - op.send) * 1000)
    out = {}
    for target, (n, bad) in counts.items():
        if n < min_sample:
            continue
        answered = sorted(latencies.get(target, ()))
        p99 = answered[min(len(answered) - 1, int(0.99 * len(answered)))] if answered else None
        out[target] = ClientSeen(error_rate=bad / n, latency_p99_ms=p99)
    return out
