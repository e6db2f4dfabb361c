"""The checker against a brute-force one on thousands of small random histories.

The brute force enumerates total orders that respect real time (an op that completed
before another was sent comes first), with each indeterminate write or CAS either left
out or placed anywhere after its send, and applies a register written here from the
contract's semantics, independently of the checker's model. Histories are tiny (<= 8
ops, 2 or 3 values, so values repeat and the checker's exact deadlines must step aside),
on a coarse time grid (so equal times, which are concurrent, are common).

Each verdict must agree; a failure's stretch must itself be non-linearizable by brute
force and hold the culprit; and a watch fed the same history piece by piece, as a
workload would, must find the same first culprit per key.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import cache

import pytest

from pytest_operator._history import History, Op, OpKind, Outcome
from pytest_operator._linearizable import LinearizabilityWatch, check

OK, REJ, ERR, TMO = Outcome.OK, Outcome.REJECTED, Outcome.ERROR, Outcome.TIMEOUT
READ, WRITE, CAS = OpKind.READ, OpKind.WRITE, OpKind.CAS
GAVE_UP = 2.5


# ---------------------------------------------------------------- the brute force


def _apply(op: Op, state: str | None) -> tuple[bool, str | None]:
    """(possible, new state) of one op taking effect in ``state``, per the contract."""
    if op.kind == READ:
        return op.result == state, state
    if op.kind == WRITE:
        return True, op.value
    if op.outcome is REJ:  # a failed compare that reported the current value
        return state == op.result and state != op.expected, state
    return state == op.expected, op.value


def _judged(op: Op) -> str | None:
    """'must' (took effect), 'may' (indeterminate), or None (constrains nothing)."""
    if op.outcome is ERR:
        return None
    if op.outcome is TMO:
        return None if op.kind == READ else "may"
    if op.outcome is REJ:
        return "must" if op.kind == CAS and op.result is not None else None
    return "must"


def brute_linearizable(ops: list[Op], initial: str | None = None) -> bool:
    return all(
        _brute_key([op for op in ops if op.key == key], initial) for key in {op.key for op in ops}
    )


def _brute_key(ops: list[Op], initial: str | None) -> bool:
    must = [op for op in ops if _judged(op) == "must"]
    may = [op for op in ops if _judged(op) == "may"]
    every = must + may
    before = [
        sum(1 << i for i, a in enumerate(must) if a.recv is not None and a.recv < b.send)
        for b in every
    ]
    done = (1 << len(must)) - 1

    @cache
    def search(placed: int, state: str | None) -> bool:
        if placed & done == done:
            return True
        for j, op in enumerate(every):
            if placed >> j & 1 or before[j] & ~placed:
                continue
            possible, after = _apply(op, state)
            if possible and search(placed | 1 << j, after):
                return True
        return False

    return search(0, initial)


# ---------------------------------------------------------------- random histories


def _random_op(rng: random.Random, index: int, values: list[str], keys: int, open_ended: int) -> Op:
    send = float(rng.randrange(0, 8))
    recv = send + rng.randrange(0, 4)
    kind = rng.choice((READ, READ, WRITE, CAS))
    outcome = rng.choices((OK, TMO, REJ, ERR), (70, open_ended, 10, 5))[0]
    maybe = [None, *values]
    value = expected = result = None
    if kind == READ:
        result = rng.choice(maybe) if outcome is OK else None
    elif kind == WRITE:
        value = rng.choice(values)
    else:
        value, expected = rng.choice(values), rng.choice(maybe)
        if outcome is REJ and rng.random() < 0.8:
            result = rng.choice(maybe)
    return Op(
        index=index,
        target=f"n{rng.randrange(3)}",
        key=f"k{rng.randrange(keys)}",
        scheduled=send,
        send=send,
        recv=None if outcome is TMO else recv,
        outcome=outcome,
        gave_up=GAVE_UP if outcome is TMO else None,
        kind=kind,
        value=value,
        expected=expected,
        result=result,
    )


def _simulated(rng: random.Random, ops: list[Op], initial: str | None) -> list[Op]:
    """Rewrite results so the history is linearizable: each op takes effect at a point in
    its interval (an indeterminate one at a point after its send, or never), results from
    one register per key; then, sometimes, one result is spoiled."""
    points = []
    for i, op in enumerate(ops):
        if op.outcome is ERR or (op.outcome is TMO and rng.random() < 0.5):
            continue
        end = op.recv if op.recv is not None else op.send + 4
        points.append((rng.uniform(op.send, end), i))
    state: dict[str, str | None] = {}
    out = list(ops)
    for _, i in sorted(points):
        op = ops[i]
        current = state.get(op.key, initial)
        if op.kind == READ:
            if op.outcome is OK:
                out[i] = replace(op, result=current)
        elif op.kind == WRITE:
            if op.outcome is not REJ:
                state[op.key] = op.value
        elif op.outcome is TMO:
            if current == op.expected:
                state[op.key] = op.value
        elif current == op.expected:
            out[i] = replace(op, outcome=OK, result=None)
            state[op.key] = op.value
        else:
            out[i] = replace(op, outcome=REJ, result=current if rng.random() < 0.8 else None)
    if rng.random() < 0.3:
        i = rng.randrange(len(out))
        if out[i].kind == READ and out[i].outcome is OK:
            out[i] = replace(out[i], result=rng.choice([None, "a", "b", "c"]))
    return out


def _histories(
    seed: int, count: int, *, open_ended: int = 15, most: int = 8
) -> list[tuple[list[Op], str | None]]:
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        values = ["a", "b", "c"][: rng.choice((2, 3))]
        keys = 1 if rng.random() < 0.8 else 2
        size = rng.randint(1, most)
        ops = [_random_op(rng, i, values, keys, open_ended) for i in range(size)]
        initial = rng.choice((None, None, "a"))
        if rng.random() < 0.5:
            ops = _simulated(rng, ops, initial)
        made.append((ops, initial))
    return made


# ---------------------------------------------------------------- feeding a watch


def watch_culprits(ops: list[Op], initial: str | None, seed: int) -> dict[str, Op]:
    """Feed ``ops`` to a watch as a workload would (announced when sent, recorded when
    resolved), ticking at random moments; the first culprit per key."""
    rng = random.Random(seed)
    history = History()
    watch = LinearizabilityWatch(history, initial=initial)
    events = sorted(
        [(op.send, 0, i) for i, op in enumerate(ops)]
        + [(op.resolved if op.resolved is not None else op.send, 1, i) for i, op in enumerate(ops)]
    )
    now = -1.0
    for at, what, i in events:
        if at > now:
            if rng.random() < 0.5:
                watch.check(now)
            now = at
        if what == 0:
            history.invoked(replace(ops[i], recv=None, outcome=TMO))
        else:
            history.append(ops[i])
    watch.check(100.0)
    first: dict[str, Op] = {}
    for anomaly in watch.anomalies:
        first.setdefault(anomaly.key, anomaly.culprit)
    return first


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize(
    ("seed", "open_ended", "most"),
    [(0, 15, 8), (1, 15, 8), (2, 15, 8), (3, 15, 8), (4, 60, 9), (5, 60, 9)],
)
def test_checker_agrees_with_brute_force(seed: int, open_ended: int, most: int) -> None:
    """Seeds 4 and 5: many timed-out ops (weight 60 against 70 answered), up to 9 ops."""
    bad = 0
    histories = _histories(seed, 800, open_ended=open_ended, most=most)
    for number, (ops, initial) in enumerate(histories):
        expected = brute_linearizable(ops, initial)
        result = check(ops, initial=initial)
        context = f"history {number} of seed {seed}: {[op.to_dict() for op in ops]}"
        assert result.valid == expected, context
        assert watch_culprits(ops, initial, number) == {
            a.key: a.culprit for a in result.anomalies
        }, context
        for anomaly in result.anomalies:
            bad += 1
            assert any(op is anomaly.culprit for op in anomaly.stretch), context
            assert all(any(op is o for o in ops) for op in anomaly.stretch), context
            assert not brute_linearizable(list(anomaly.stretch), initial), context
    assert bad > 100  # the generator makes both kinds, plenty of each
