"""The incremental watch, fed a growing history as a workload feeds it.

Ops are announced when sent (``History.invoked``) and recorded when resolved; the watch
is ticked between, with the tick's time as ``now``. Hand-built histories check what it
reports and when; a simulated five-minute run at 50 ops/s checks it stays quiet on a
linearizable history, agrees with the full check, and what a tick costs.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace

from pytest_operator._anomalies import AnomalyKind
from pytest_operator._history import History, Op, OpKind, Outcome
from pytest_operator._linearizable import LinearizabilityWatch, check
from pytest_operator._signals import SafetyViolation
from tests.checkers.test_linearizable import cas, numbered, read, write

TMO = Outcome.TIMEOUT


class Feed:
    """Plays ops into a history in time order: each op announced at its send, recorded at
    its answer (a timeout when its client gave up)."""

    def __init__(self, ops: list[Op]) -> None:
        self.history = History()
        self.now = -math.inf
        events = [(op.send, 0, i) for i, op in enumerate(ops)]
        events += [(_resolved(op), 1, i) for i, op in enumerate(ops)]
        self._events = sorted(events)
        self._ops = ops
        self._next = 0

    def until(self, t: float) -> None:
        """Everything that happened up to ``t`` (inclusive)."""
        while self._next < len(self._events) and self._events[self._next][0] <= t:
            _, what, i = self._events[self._next]
            op = self._ops[i]
            if what == 0:
                self.history.invoked(replace(op, recv=None, outcome=TMO))
            else:
                self.history.append(op)
            self._next += 1
        self.now = t


def _resolved(op: Op) -> float:
    resolved = op.resolved
    assert resolved is not None
    return resolved


def test_a_stale_read_is_reported_once_the_history_is_complete_up_to_it() -> None:
    ops = numbered(
        write("41", 0, 1, target="n1"),
        write("57", 2, 3, target="n1"),
        read("57", 3.5, 4, target="n2"),
        write("60", 5.5, 12, target="n1"),  # slow: holds the horizon back to 5.5
        read("41", 6, 7, target="n3"),
        read("60", 12.5, 13, target="n2"),
    )
    stale = ops[4]
    feed = Feed(ops)
    watch = LinearizabilityWatch(feed.history, show_for=3.0)
    feed.until(7.5)
    assert not watch.check(7.5)  # the stale read is recorded, but 5.5 is the horizon
    assert not watch.anomalies
    feed.until(12.2)
    (violation,) = watch.check(12.2)
    (anomaly,) = watch.anomalies
    assert anomaly.kind is AnomalyKind.STALE_READ
    assert anomaly.culprit is stale
    assert anomaly.stretch == (ops[0], ops[1], stale)
    assert violation.property == "linearizable"
    assert violation.components == ("n3",)
    assert (violation.observed, violation.bound) == (1.0, 0.0)
    assert violation.at == 7.0
    assert violation.detail == anomaly.describe()
    # shown for show_for seconds after it was found, then only kept in .anomalies
    feed.until(15.1)
    assert watch.check(15.1) == (violation,)
    feed.until(15.3)
    assert watch.check(15.3) == ()
    assert watch.anomalies == (anomaly,)


def test_after_an_anomaly_the_key_resumes_and_finds_the_next() -> None:
    ops = numbered(
        write("1", 0, 1),
        write("2", 2, 3),
        read("1", 4, 5, target="n3"),  # stale
        read("2", 6, 7),  # consistent again: nothing to report
        write("3", 8, 9),
        read("3", 10, 11),
        write("4", 12, 13),
        read("4", 13.5, 13.8),
        read("3", 14, 15, target="n2"),  # stale again
        read("4", 16, 17),
    )
    feed = Feed(ops)
    watch = LinearizabilityWatch(feed.history, property="linearizable-register", show_for=1.0)
    found: list[tuple[float, SafetyViolation]] = []
    for tick in range(1, 40):
        now = tick * 0.5
        feed.until(now)
        found.extend((now, v) for v in watch.check(now))
    first, second = watch.anomalies
    assert (first.culprit, second.culprit) == (ops[2], ops[8])
    assert first.kind is AnomalyKind.STALE_READ  # not LOST_WRITE: '2' may yet be seen
    assert second.kind is AnomalyKind.STALE_READ  # '4' had been seen by then
    assert second.stretch == (ops[4], ops[6], ops[8])
    assert {v.components for _, v in found} == {("n3",), ("n2",)}
    assert {v.property for _, v in found} == {"linearizable-register"}
    # each shown from the tick that found it, for one second
    assert [now for now, v in found if v.at == 5.0] == [5.5, 6.0]
    assert [now for now, v in found if v.at == 15.0] == [15.5, 16.0]


def test_stale_reads_at_a_cut_off_member_are_blamed_and_the_majority_is_not() -> None:
    # n3 (cut off) keeps serving '1' while n1 and n2 go on with compare-and-sets: each
    # stale read is an anomaly at n3, and the CASes, which agree with each other, are
    # never blamed for contradicting what n3 served.
    ops = numbered(
        write("1", 0, 1, target="n1"),
        cas("1", "2", 2, 3, target="n1"),
        read("1", 4, 5, target="n3"),  # stale
        cas("2", "3", 5.5, 6, target="n2"),
        read("1", 7, 8, target="n3"),  # stale again
        cas("3", "4", 8.5, 9, target="n1"),
        read("1", 10, 11, target="n3"),  # and again
        cas("4", "5", 11.5, 12, target="n2"),
    )
    feed = Feed(ops)
    watch = LinearizabilityWatch(feed.history, show_for=1.0)
    blamed: set[tuple[str, ...]] = set()
    for tick in range(1, 30):
        feed.until(tick * 0.5)
        blamed.update(v.components for v in watch.check(tick * 0.5))
    assert [a.culprit for a in watch.anomalies] == [ops[2], ops[4], ops[6]]
    # mid-run, the first is a stale read too (that '2' was never seen is not known yet)
    assert all(a.kind is AnomalyKind.STALE_READ for a in watch.anomalies)
    assert blamed == {("n3",)}


def test_a_timed_out_write_seen_late_restarts_the_search() -> None:
    # the timed-out write of 'x' resolves at 2.5, unobserved: the watch searches past it
    # without it; the read of 'x' at [6, 7] arrives later and feeds it, so the search goes
    # back before its send. Seen after 'y' was written, 'x' took effect after 'y'; the
    # read of 'y' at [8, 9] is then stale, and must be the culprit (not the read of 'x').
    ops = numbered(
        write("x", 0.5, None),
        write("y", 4, 5),
        read("x", 6, 7),
        read("y", 8, 9, target="n2"),
    )
    feed = Feed(ops)
    watch = LinearizabilityWatch(feed.history)
    for now in (1.0, 3.0, 5.5, 7.5, 9.5, 12.0):
        feed.until(now)
        watch.check(now)
    (anomaly,) = watch.anomalies
    assert anomaly.culprit is ops[3]
    assert anomaly.stretch == (ops[0], ops[1], ops[2], ops[3])
    assert [a.culprit for a in check(ops).anomalies] == [ops[3]]
    # and without the last read, the late write makes it linearizable
    quiet = Feed(ops[:3])
    watch = LinearizabilityWatch(quiet.history)
    for now in (1.0, 3.0, 5.5, 7.5, 9.5, 12.0):
        quiet.until(now)
        assert watch.check(now) == ()
    assert watch.anomalies == ()


def test_the_horizon_holds_back_an_op_in_flight() -> None:
    ops = numbered(write("1", 0, 1), write("2", 2, 3), read("1", 4, 5), write("9", 1.5, 20))
    feed = Feed(ops)
    watch = LinearizabilityWatch(feed.history)
    feed.until(10)
    assert watch.check(10) == ()  # write '9' in flight since 1.5: nothing after judged
    assert feed.history.pending_since() == 1.5
    feed.until(20)
    (violation,) = watch.check(20)
    assert violation.at == 5.0


# ---------------------------------------------------------------- a long run


@dataclass
class _Planned:
    op: Op
    point: float | None  # when it took effect (None: never)


def simulated_run(seconds: float, rate: float, *, seed: int = 0) -> list[Op]:
    """A linearizable register history as a workload would record it: open-loop arrivals
    at ``rate`` ops/s over 5 keys, reads/writes/CAS 50/30/20 with unique values, latencies
    of a few ms with a slow tail, 5% timed out (a timed-out write or CAS takes effect with
    probability 1/2, up to 1.5 s after it was sent)."""
    rng = random.Random(seed)
    planned: list[_Planned] = []
    asked: dict[str, str] = {}
    for index in range(int(seconds * rate)):
        send = index / rate + rng.uniform(0, 0.5 / rate)
        key = f"k{rng.randrange(5)}"
        kind = rng.choices((OpKind.READ, OpKind.WRITE, OpKind.CAS), (5, 3, 2))[0]
        value = expected = None
        if kind is not OpKind.READ:
            value = str(index)
            expected = asked.get(key) if kind is OpKind.CAS else None
            asked[key] = value
        latency = rng.lognormvariate(math.log(0.003), 0.5) * (
            rng.uniform(5, 30) if rng.random() < 0.05 else 1
        )
        timed_out = rng.random() < 0.05
        point: float | None = send + rng.uniform(0, latency)
        if timed_out and (kind is OpKind.READ or rng.random() < 0.5):
            point = None
        elif timed_out:
            point = send + rng.uniform(0, 1.5)
        op = Op(
            index=index,
            target=f"n{index % 3 + 1}",
            key=key,
            scheduled=send,
            send=send,
            recv=None if timed_out else send + latency,
            outcome=TMO if timed_out else Outcome.OK,
            gave_up=1.0 if timed_out else None,
            kind=kind,
            value=value,
            expected=expected,
        )
        planned.append(_Planned(op, point))
    state: dict[str, str | None] = {}
    for p in sorted((p for p in planned if p.point is not None), key=lambda p: p.point or 0):
        op, current = p.op, state.get(p.op.key)
        if op.kind is OpKind.READ:
            p.op = replace(op, result=current)
        elif op.kind is OpKind.WRITE or current == op.expected:
            state[op.key] = op.value
        elif not op.indeterminate:
            p.op = replace(op, outcome=Outcome.REJECTED, result=current)
    return sorted((p.op for p in planned), key=_resolved)


def test_five_minutes_at_50_ops_per_second_stay_quiet_and_ticks_are_cheap() -> None:
    ops = simulated_run(300, 50, seed=3)
    assert check(ops).valid
    feed = Feed(ops)
    watch = LinearizabilityWatch(feed.history)
    ticks: list[float] = []
    now = 0.0
    while now < 302:
        now += 0.2
        feed.until(now)
        began = time.perf_counter()
        assert watch.check(now) == ()
        ticks.append(time.perf_counter() - began)
    assert watch.anomalies == ()
    ticks.sort()
    mean = sum(ticks) / len(ticks)
    print(
        f"{len(ops)} ops, {len(ticks)} ticks: mean {mean * 1e3:.3f} ms,"
        f" p99 {ticks[int(len(ticks) * 0.99)] * 1e3:.3f} ms, max {ticks[-1] * 1e3:.3f} ms"
    )
    assert mean < 0.01  # typically ~0.3 ms; generous for a loaded machine


def test_a_stale_read_late_in_a_long_run_is_found_within_a_tick() -> None:
    ops = simulated_run(60, 50, seed=4)
    # make the last read of k0 stale: it returns the value of an older acknowledged write
    reads = [op for op in ops if op.key == "k0" and op.kind is OpKind.READ and op.recv]
    last = reads[-1]
    writes = [
        op
        for op in ops
        if op.key == "k0" and op.kind is OpKind.WRITE and op.recv and op.recv < last.send - 1
    ]
    stale = replace(last, result=writes[0].value)
    ops = [stale if op is last else op for op in ops]
    feed = Feed(ops)
    watch = LinearizabilityWatch(feed.history)
    now, found_at = 0.0, None
    while now < 62 and found_at is None:
        now += 0.2
        feed.until(now)
        if watch.check(now):
            found_at = now
    (anomaly,) = watch.anomalies
    assert anomaly.culprit is stale
    # stale, or lost when nobody saw the write that overwrote it before it was found
    assert anomaly.kind in (AnomalyKind.STALE_READ, AnomalyKind.LOST_WRITE)
    assert found_at is not None and anomaly.at <= found_at
    assert anomaly.culprit.recv is not None
    assert found_at - anomaly.culprit.recv < 1.5  # held back at most by ops in flight
    assert [a.culprit for a in check(ops).anomalies] == [stale]
