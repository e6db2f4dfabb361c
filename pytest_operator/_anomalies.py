"""Explaining a linearizability failure: what the culprit saw, the proof, the shape's name.

:mod:`pytest_operator._linearizable` finds, per key, the first op no linearization explains
(the culprit) and hands it here, with the key's ops; :func:`explain` makes it an
:class:`Anomaly` in three steps, the first two rerunning that module's search on parts of
the key's history. (Only under the :class:`~pytest_operator._linearizable.Register` model:
under another, an anomaly is ``not-linearizable`` and its stretch its segment's ops.)

1. *The smallest stretch.* Ops are deleted while the culprit still fails, but only *safe*
   deletions: an op that writes nothing, or a write whose value no remaining op observes.
   Soundness: if the whole history had a linearization, deleting such an op from it leaves
   a linearization of the rest (the state changes only in the deleted write's stretch,
   where by assumption nothing looks at it), so a stretch that is not linearizable proves
   the whole history is not. The ops after the culprit go first, then the longest run of
   the oldest ops (so the stretch keeps the latest writes that explain it), then chunks,
   halving, down to one op at a time until no safe deletion keeps it. For a stale read
   that is the classic three: the write of the value read, the write that overwrote it
   before the read began, and the read.
2. *What it could have seen:* each value written and not surely overwritten before the
   culprit began (and the initial value until one was), tried in place of the one it saw.
3. *The shape* (:class:`AnomalyKind`): stale read, lost write, never written, stale CAS,
   or just not linearizable; and :meth:`Anomaly.describe` says it in one sentence.

This module imports :mod:`pytest_operator._linearizable` (the search, and what an op does);
that one imports this only when called (its ``check`` functions, and ``Anomaly`` and
``AnomalyKind`` still importable from there), so loading either first works.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from pytest_operator._history import Op, OpKind, Outcome
from pytest_operator._linearizable import (
    INF,
    Failure,
    KeyRun,
    Model,
    value_observed,
    value_written,
)

# ---------------------------------------------------------------- an anomaly


class AnomalyKind(enum.StrEnum):
    STALE_READ = "stale-read"
    """A read (or refused CAS) saw a value already overwritten before it began, and the
    newer value was seen elsewhere."""
    LOST_WRITE = "lost-write"
    """An acknowledged write never became visible: a later read saw what it overwrote, and
    nobody ever saw it."""
    NEVER_WRITTEN = "never-written"
    """A read saw a value no operation wrote."""
    STALE_CAS = "stale-cas"
    """A CAS succeeded against a value that was no longer current."""
    NOT_LINEARIZABLE = "not-linearizable"
    """Any other shape."""


@dataclass(frozen=True, slots=True)
class Anomaly:
    """The first op of a key that no linearization explains (``at``: when it completed),
    what it could have seen instead, and the proof: ``stretch``, the smallest set of ops
    found that is not linearizable (in invoke order)."""

    key: str
    kind: AnomalyKind
    culprit: Op
    could_see: tuple[str | None, ...]
    stretch: tuple[Op, ...]
    at: float

    def describe(self, t0: float | None = None) -> str:
        """One sentence: who saw what, when, and why it is impossible. Times are seconds
        after ``t0`` when given, else the time of day (UTC) for epoch times."""
        c = self.culprit
        saw = _seen(c)
        span = _span(c.send, None if c.indeterminate else self.at, t0)
        newer = _newer(self)
        if c.kind == OpKind.CAS:
            verb = {Outcome.OK: "succeeded", Outcome.REJECTED: f"failed seeing {_show(saw)}"}
            did = f"CAS {c.key} {_show(c.expected)}->{_show(c.value)}"
            did += f" {verb.get(c.outcome, 'had no answer')}"
            noun = "CAS"
        else:
            did, noun = f"read {c.key} = {_show(saw)}", "read"
        who = f"{c.target} {did} at {span}"
        could = _alternatives(self.could_see)
        if self.kind is AnomalyKind.NEVER_WRITTEN:
            return f"{who}, but no op ever wrote {_show(saw)}; it could have seen {could}"
        if newer is not None and self.kind is not AnomalyKind.NOT_LINEARIZABLE:
            op, value, written = newer
            done = _time(_done(op), t0)
            if self.kind is AnomalyKind.LOST_WRITE:
                return (
                    f"{who}, but the acknowledged write of {_show(value)} (completed {done})"
                    f" had overwritten it before the {noun} began, and no op ever saw"
                    f" {_show(value)}: the write was lost"
                )
            how = "written" if written else f"seen by {op.target}'s {op.kind}"
            return (
                f"{who}, but {_show(value)} had been {how} (completed {done}) before the"
                f" {noun} began; it could have seen {could}"
            )
        return (
            f"{who}, which no linearization of the {len(self.stretch)} ops of its stretch"
            f" allows; it could have seen {could}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "kind": self.kind.value,
            "culprit": self.culprit.to_dict(),
            "could_see": list(self.could_see),
            "stretch": [op.to_dict() for op in self.stretch],
            "at": self.at,
            "description": self.describe(),
        }


# ---------------------------------------------------------------- saying it


def _show(value: str | None) -> str:
    return "absent" if value is None else repr(value)


def _alternatives(values: Sequence[str | None]) -> str:
    if not values:
        return "no value at all"
    shown = [_show(v) for v in values]
    return "only " + (shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1])


def _time(t: float, t0: float | None) -> str:
    if t0 is not None:
        return f"{t - t0:.3f} s"
    if t > 1e8:  # an epoch time: the time of day reads best beside logs
        secs, ms = divmod(round(t * 1000), 1000)
        return time.strftime("%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}"
    return f"{t:.3f} s"


def _span(start: float, end: float | None, t0: float | None) -> str:
    if end is None:
        return f"{_time(start, t0)} (no answer)"
    a, b = _time(start, t0), _time(end, t0)
    if a.endswith(" s") and b.endswith(" s"):
        return f"{a[:-2]}-{b}"
    return f"{a}-{b}"


def _done(op: Op) -> float:
    return op.recv if op.recv is not None else INF


def _seen(op: Op) -> str | None:
    """The value an op saw: a read's result, a refused CAS's report, a CAS's expected."""
    if op.kind == OpKind.CAS and op.outcome is not Outcome.REJECTED:
        return op.expected
    return op.result


def _newer(anomaly: Anomaly) -> tuple[Op, str | None, bool] | None:
    """The evidence that another value was current before the culprit began: the
    latest-completing determinate op of the stretch, done before the culprit's send, that
    wrote (True) or saw (False) a value other than the one the culprit saw."""
    c = anomaly.culprit
    saw = _seen(c)
    best: tuple[Op, str | None, bool] | None = None
    for op in anomaly.stretch:
        if op is c or op.indeterminate or not _done(op) < c.send:
            continue
        if best is not None and _done(op) <= _done(best[0]):
            continue
        produces, value = value_written(op)
        if produces and value != saw:
            best = (op, value, True)
            continue
        observes, value = value_observed(op)
        if observes and value != saw:
            best = (op, value, False)
    return best


# ---------------------------------------------------------------- explaining a failure


def explain(key: str, failure: Failure, run: KeyRun) -> Anomaly:
    """``failure`` (the first found in ``run``, the search over ``key``'s ops) as an
    :class:`Anomaly`: its smallest stretch, the values the culprit could have seen, its
    shape. Under another model than the register, it is ``not-linearizable`` and its
    stretch is the segment's ops."""
    model, initial, culprit = run.model, run.initial, failure.op
    if not run.exact:
        stretch = sorted(failure.ops, key=lambda op: (op.send, op.index))
        return Anomaly(key, AnomalyKind.NOT_LINEARIZABLE, culprit, (), tuple(stretch), failure.at)
    end = failure.at
    stretch = _minimize(failure.ops, culprit, end, model, initial, failure.state)
    # what it could have seen is judged from the last write that completed before it began
    ops = failure.ops
    since = max(
        (op.send for op in ops if value_written(op)[0] and _done(op) < culprit.send), default=-INF
    )
    drop = _safe_part((op for op in ops if op.send < since or op.send > end), ops)
    context = [op for op in ops if id(op) not in drop]
    could = _could_see(context, culprit, end, model, initial, failure.state)
    anomaly = Anomaly(key, AnomalyKind.NOT_LINEARIZABLE, culprit, could, tuple(stretch), end)
    return replace(anomaly, kind=_kind(anomaly, run))


def _minimize(
    ops: Sequence[Op],
    culprit: Op,
    end: float,
    model: Model,
    initial: str | None,
    state: Hashable,
) -> list[Op]:
    """The smallest stretch found by safe deletions that still fails at ``culprit`` (which
    completed at ``end``).

    The ops sent after ``end`` go first, unchecked (they cannot change the search up to
    ``end``: an indeterminate write they fed is only an option less, and a deadline they
    set lies after ``end``). Then the shortest suffix before the culprit that keeps the
    failure (:func:`_shortest_suffix`), then chunks (:func:`_without_chunks`)."""

    def fails(ops: Sequence[Op]) -> bool:
        failure = _first_failure(ops, model, initial, state)
        return failure is not None and failure.op is culprit

    current = sorted(ops, key=lambda op: (op.send, op.index))
    current = _without(current, _safe_part((op for op in current if op.send > end), current))
    return _without_chunks(_shortest_suffix(current, culprit, fails), culprit, fails)


def _shortest_suffix(
    current: list[Op], culprit: Op, fails: Callable[[Sequence[Op]], bool]
) -> list[Op]:
    """``current`` without its longest run of oldest ops (but the culprit) whose safe part
    may go while it still ``fails``, found by doubling the ops kept from 8, then bisection
    (so the stretch keeps the latest writes that explain the failure, and each trial is
    small)."""
    older = [op for op in current if op is not culprit]

    def keeping(count: int) -> list[Op]:
        return _without(current, _safe_part(older[: len(older) - count], current))

    keep = 8
    while keep < len(older) and not fails(keeping(keep)):
        keep *= 2
    lo, hi = keep // 2 + 1 if keep > 8 else 0, min(keep, len(older))
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(keeping(mid)):
            hi = mid
        else:
            lo = mid + 1
    return keeping(hi)


def _without_chunks(
    current: list[Op], culprit: Op, fails: Callable[[Sequence[Op]], bool]
) -> list[Op]:
    """``current`` without the safe part of each chunk of ops (but the culprit) that may
    go while it still ``fails``: chunks of half of it, halving, oldest first (again
    keeping the latest), down to one op at a time until no safe deletion keeps it."""
    size = max(1, (len(current) - 1) // 2)
    while True:
        removed = False
        candidates = [op for op in current if op is not culprit]
        for i in range(0, len(candidates), size):
            present = {id(op) for op in current}
            chunk = (op for op in candidates[i : i + size] if id(op) in present)
            drop = _safe_part(chunk, current)
            if drop and fails(trial := _without(current, drop)):
                current, removed = trial, True
        if size == 1 and not removed:
            return current
        size = max(1, size // 2)


def _without(ops: Sequence[Op], drop: set[int]) -> list[Op]:
    """``ops`` but those whose ``id()`` is in ``drop``."""
    return [op for op in ops if id(op) not in drop]


def _safe_part(chunk: Iterable[Op], current: Sequence[Op]) -> set[int]:
    """The largest part of ``chunk`` (as ``id()``s) that may be deleted soundly from
    ``current``: every op in it writes nothing, or a value no remaining op observes."""
    drop = {id(op): op for op in chunk}
    while True:
        observed = set()
        for op in current:
            if id(op) not in drop:
                observes, value = value_observed(op)
                if observes:
                    observed.add(value)
        keep = [i for i, op in drop.items() if (p := value_written(op))[0] and p[1] in observed]
        if not keep:
            return set(drop)
        for i in keep:
            del drop[i]


def _could_see(
    ops: Sequence[Op],
    culprit: Op,
    end: float,
    model: Model,
    initial: str | None,
    state: Hashable,
) -> tuple[str | None, ...]:
    """The values the culprit could have seen (or compared against) in a linearization of
    ``ops`` up to its completion, each tried by replacing what it saw. Tried: the values
    of writes not surely overwritten before it began (another write was sent after they
    completed and completed before it began), and the initial value until one was."""
    overwritten_before = max(
        (op.send for op in ops if value_written(op)[0] and _done(op) < culprit.send), default=-INF
    )
    candidates: list[str | None] = []
    if overwritten_before == -INF and isinstance(state, tuple) and len(state) == 1:
        candidates.append(state[0])
    for op in sorted(ops, key=lambda op: (op.send, op.index)):
        produces, value = value_written(op)
        if not produces or op is culprit or value in candidates or op.send >= end:
            continue
        if op.indeterminate or _done(op) >= overwritten_before:
            candidates.append(value)
    saw = _seen(culprit)
    out: list[str | None] = []
    others = [op for op in ops if op is not culprit]
    for value in candidates:
        if value == saw:
            continue
        if culprit.kind == OpKind.CAS and culprit.outcome is not Outcome.REJECTED:
            probe = replace(culprit, expected=value)
        else:
            probe = replace(culprit, result=value)
        failure = _first_failure([*others, probe], model, initial, state)
        if failure is None or (failure.op is not probe and failure.at >= end):
            out.append(value)
    return tuple(out)


def _kind(anomaly: Anomaly, run: KeyRun) -> AnomalyKind:
    """Name the shape, from the key's whole history as known. Stale (a read, or a CAS) and
    lost write need the value seen to have been overwritten before the culprit began:
    another value was written or seen before it began (in the stretch), by a write sent
    after the seen value surely existed (its write completed, or another op saw it); so
    two concurrent writes seen in opposite orders are just not linearizable. Stale when
    that newer value was seen by some op, lost when an acknowledged write nobody saw."""
    c = anomaly.culprit
    saw = _seen(c)
    writers = [op for op in run.ops if op.kind in _WRITERS and op.value == saw]
    if saw != run.initial and not writers:
        return AnomalyKind.NEVER_WRITTEN
    if saw != run.initial and not any(op.send < c.send for op in writers):
        return AnomalyKind.NOT_LINEARIZABLE  # it saw a value from the future
    newer = _newer(anomaly)
    if newer is None:
        return AnomalyKind.NOT_LINEARIZABLE
    _, value, written = newer
    effective = (Outcome.OK, Outcome.TIMEOUT)
    written_by = -INF if saw == run.initial else INF  # when the seen value surely existed
    for op in run.ops:
        if op.kind in _WRITERS and op.value == saw and op.outcome in effective:
            written_by = min(written_by, _done(op))
        elif op is not c and not op.indeterminate and value_observed(op) == (True, saw):
            written_by = min(written_by, _done(op))
    if not any(
        op.kind in _WRITERS
        and op.value == value
        and op.outcome in effective
        and op.send > written_by
        for op in run.ops
    ):
        return AnomalyKind.NOT_LINEARIZABLE
    if c.kind == OpKind.CAS and c.outcome is not Outcome.REJECTED:
        return AnomalyKind.STALE_CAS
    seen = {
        value_observed(op)[1] for op in run.ops if value_observed(op)[0] and not op.indeterminate
    }
    if not written or value in seen:
        return AnomalyKind.STALE_READ
    return AnomalyKind.LOST_WRITE


_WRITERS: Final = frozenset((OpKind.WRITE, OpKind.CAS))


def _first_failure(
    ops: Iterable[Op], model: Model, initial: str | None, state: Hashable
) -> Failure | None:
    """The search's first failure on ``ops`` alone, from ``state``, if any."""
    run = KeyRun(model, initial, state=state)
    for op in sorted(ops, key=lambda op: (op.send, op.index)):
        run.add(op)
    found = run.advance(INF, first_only=True)
    return found[0] if found else None
