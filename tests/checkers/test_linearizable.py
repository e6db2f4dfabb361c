"""The linearizability checker on hand-built register histories.

Times are plain seconds (floats); each history is a list of ops made by the helpers
below, numbered in the order written. Where a stretch is asserted, it is the exact ops.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import replace

import pytest

from pytest_operator._anomalies import AnomalyKind
from pytest_operator._history import Op, OpKind, Outcome
from pytest_operator._linearizable import UNKNOWN, CheckResult, Register, check
from pytest_operator._workload import OpMix, requests

OK, REJ, ERR, TMO = Outcome.OK, Outcome.REJECTED, Outcome.ERROR, Outcome.TIMEOUT


def _op(kind: str, send: float, recv: float | None, outcome: Outcome, **fields: object) -> Op:
    target = str(fields.pop("target", "n1"))
    key = str(fields.pop("key", "k"))
    return Op(
        index=-1,
        target=target,
        key=key,
        scheduled=send,
        send=send,
        recv=None if outcome is TMO else recv,
        outcome=outcome,
        gave_up=2.0 if outcome is TMO else None,
        kind=kind,
        **fields,  # type: ignore[arg-type]  # value / expected / result, all str | None
    )


def read(result: str | None, send: float, recv: float, **where: str) -> Op:
    return _op(OpKind.READ, send, recv, OK, result=result, **where)


def write(
    value: str, send: float, recv: float | None, *, outcome: Outcome = OK, **where: str
) -> Op:
    return _op(OpKind.WRITE, send, recv, TMO if recv is None else outcome, value=value, **where)


def cas(
    expected: str | None,
    value: str,
    send: float,
    recv: float | None,
    *,
    outcome: Outcome = OK,
    result: str | None = None,
    **where: str,
) -> Op:
    kind = OpKind.CAS
    outcome = TMO if recv is None else outcome
    return _op(kind, send, recv, outcome, value=value, expected=expected, result=result, **where)


def numbered(*ops: Op) -> list[Op]:
    """The ops with indexes in the order given (the schedule's order)."""
    return [replace(op, index=i) for i, op in enumerate(ops)]


def verdict(ops: list[Op], **kwargs: str | None) -> CheckResult:
    result = check(ops, **kwargs)  # type: ignore[arg-type]  # initial only
    assert result.ops == len(ops)
    return result


# ---------------------------------------------------------------- linearizable


LINEARIZABLE = {
    "empty": [],
    "sequential": [
        write("1", 0, 1),
        read("1", 2, 3),
        write("2", 4, 5),
        read("2", 6, 7),
        cas("2", "3", 8, 9),
        read("3", 10, 11),
        cas("2", "4", 12, 13, outcome=REJ, result="3"),
        cas("9", "5", 14, 15, outcome=REJ),  # refused, current value unknown
        read("3", 16, 17),
    ],
    "concurrent writes, read as the first": [write("a", 0, 5), write("b", 1, 4), read("a", 6, 7)],
    "concurrent writes, read as the second": [write("a", 0, 5), write("b", 1, 4), read("b", 6, 7)],
    "concurrent writes seen in turn while running": [
        write("a", 0, 10),
        write("b", 0, 10),
        read("b", 1, 2),
        read("a", 3, 4),
        read("a", 11, 12),
    ],
    "a read during a write sees the old value": [
        write("1", 0, 1),
        write("2", 2, 5),
        read("1", 3, 4),
    ],
    "a read during a write sees the new value": [
        write("1", 0, 1),
        write("2", 2, 5),
        read("2", 3, 4),
    ],
    "reads during a write see old then new": [
        write("1", 0, 1),
        write("2", 2, 9),
        read("1", 3, 4),
        read("2", 5, 6),
        read("2", 7, 8),
    ],
    "absent before the first write": [read(None, 0, 1), write("1", 2, 3), read("1", 4, 5)],
    "a CAS chain with concurrent reads": [
        write("1", 0, 1),
        cas("1", "2", 2, 4),
        read("1", 2.5, 3),
        cas("2", "3", 5, 8),
        read("3", 6, 7),  # the CAS took effect before it answered
        cas("1", "4", 9, 10, outcome=REJ, result="3"),
        read("3", 11, 12),
    ],
    "errors and refusals take no effect": [
        write("1", 0, 1),
        write("2", 2, 3, outcome=ERR),
        write("3", 2, 3, outcome=REJ),
        cas("1", "4", 2, 3, outcome=ERR),
        read("1", 4, 5),
    ],
    "two keys judged apart": [
        write("1", 0, 1, key="a"),
        write("1", 0, 1, key="b"),
        write("2", 2, 3, key="b"),
        read("1", 4, 5, key="a"),
        read("2", 4, 5, key="b"),
    ],
}


@pytest.mark.parametrize("name", sorted(LINEARIZABLE))
def test_linearizable_histories_pass(name: str) -> None:
    ops = numbered(*LINEARIZABLE[name])
    result = verdict(ops)
    assert result.valid, result.summary()
    assert result.anomalies == ()
    assert result.keys == len({op.key for op in ops})
    assert result.summary().startswith("linearizable (register): ")


def test_initial_value_is_what_an_unwritten_key_holds() -> None:
    ops = numbered(read("x", 0, 1), write("1", 2, 3), read("1", 4, 5))
    assert verdict(ops, initial="x").valid
    result = verdict(ops)
    assert not result.valid
    assert result.anomalies[0].kind is AnomalyKind.NEVER_WRITTEN


# ---------------------------------------------------------------- anomalies


def test_stale_read() -> None:
    ops = numbered(
        write("41", 0, 1, target="n1"),
        read("41", 1.5, 1.8, target="n2"),
        write("57", 2, 3, target="n1"),
        read("57", 3.5, 4, target="n2"),  # the newer value was seen elsewhere
        write("58", 5.5, 8, target="n1"),  # in flight during the stale read
        read("41", 6, 7, target="n3"),
    )
    stale = ops[-1]
    w41, w57 = ops[0], ops[2]
    result = verdict(ops)
    assert not result.valid
    (anomaly,) = result.anomalies
    assert anomaly.kind is AnomalyKind.STALE_READ
    assert anomaly.culprit is stale
    assert anomaly.stretch == (w41, w57, stale)
    assert anomaly.could_see == ("57", "58")
    assert anomaly.at == 7.0
    assert anomaly.key == "k"
    assert anomaly.describe() == (
        "n3 read k = '41' at 6.000-7.000 s, but '57' had been written (completed 3.000 s)"
        " before the read began; it could have seen only '57' or '58'"
    )
    assert anomaly.describe(t0=2.0).startswith("n3 read k = '41' at 4.000-5.000 s, but '57'")


def test_lost_write() -> None:
    ops = numbered(
        write("41", 0, 1),
        read("41", 1.5, 1.8, target="n2"),
        write("57", 2, 3),  # acknowledged, and nobody ever sees it
        read("41", 4, 5, target="n2"),
        read("41", 6, 7, target="n3"),
    )
    result = verdict(ops)
    (anomaly,) = result.anomalies
    assert anomaly.kind is AnomalyKind.LOST_WRITE
    assert anomaly.culprit is ops[3]
    assert anomaly.stretch == (ops[0], ops[2], ops[3])
    assert anomaly.could_see == ("57",)
    assert "the acknowledged write of '57' (completed 3.000 s)" in anomaly.describe()
    assert anomaly.describe().endswith("no op ever saw '57': the write was lost")


def test_read_of_a_value_never_written() -> None:
    ops = numbered(write("1", 0, 1), read("1", 1.5, 1.8), read("zz", 2, 3, target="n2"))
    (anomaly,) = verdict(ops).anomalies
    assert anomaly.kind is AnomalyKind.NEVER_WRITTEN
    assert anomaly.culprit is ops[2]
    assert anomaly.stretch == (ops[2],)  # alone: nothing could explain it
    assert anomaly.could_see == ("1",)
    assert anomaly.describe() == (
        "n2 read k = 'zz' at 2.000-3.000 s, but no op ever wrote 'zz'; it could have seen only '1'"
    )


def test_cas_that_succeeded_on_a_stale_value() -> None:
    ops = numbered(
        write("41", 0, 1),
        write("57", 2, 3),
        read("57", 3.5, 3.8),
        cas("41", "60", 4, 5, target="n2"),
    )
    (anomaly,) = verdict(ops).anomalies
    assert anomaly.kind is AnomalyKind.STALE_CAS
    assert anomaly.culprit is ops[3]
    assert anomaly.stretch == (ops[0], ops[1], ops[3])
    assert anomaly.could_see == ("57",)
    assert anomaly.describe().startswith(
        "n2 CAS k '41'->'60' succeeded at 4.000-5.000 s, but '57' had been written"
    )


def test_two_readers_seeing_two_writes_in_opposite_orders() -> None:
    ops = numbered(
        write("a", 0, 10, target="n1"),
        write("b", 0, 10, target="n2"),
        read("a", 1, 3, target="n3"),  # reader A: a, then b
        read("b", 1, 3, target="n4"),  # reader B: b, then a
        read("b", 4, 6, target="n3"),
        read("a", 4, 6, target="n4"),
    )
    (anomaly,) = verdict(ops).anomalies
    assert anomaly.kind is AnomalyKind.NOT_LINEARIZABLE
    assert anomaly.culprit is ops[5]  # equal times: the op scheduled later is judged later
    assert anomaly.could_see == ("b",)
    assert set(map(id, anomaly.stretch)) == set(map(id, ops))  # every op is needed
    assert "which no linearization of the 6 ops of its stretch allows" in anomaly.describe()


def test_new_then_old_is_a_stale_read() -> None:
    ops = numbered(write("1", 0, 1), write("2", 2, 9), read("2", 3, 4), read("1", 5, 6))
    (anomaly,) = verdict(ops).anomalies
    assert anomaly.kind is AnomalyKind.STALE_READ
    assert anomaly.stretch == (ops[0], ops[1], ops[2], ops[3])
    assert "'2' had been seen by n1's read (completed 4.000 s) before the read began" in (
        anomaly.describe()
    )


def test_first_anomaly_of_each_bad_key() -> None:
    ops = numbered(
        write("1", 0, 1, key="good"),
        read("1", 2, 3, key="good"),
        write("1", 0, 1, key="bad"),
        read("x", 2, 3, key="bad"),
        read("y", 4, 5, key="bad"),
        read("z", 4, 5, key="worse"),
    )
    result = verdict(ops)
    assert not result.valid
    assert result.keys == 3
    assert [(a.key, a.culprit) for a in result.anomalies] == [("bad", ops[3]), ("worse", ops[5])]
    assert result.summary().startswith("NOT linearizable (register): 2 of 3 keys bad;")
    raw = json.loads(result.to_json())
    assert raw["valid"] is False
    assert [a["kind"] for a in raw["anomalies"]] == ["never-written", "never-written"]
    assert raw["anomalies"][0]["culprit"]["result"] == "x"
    assert raw["anomalies"][0]["stretch"] == [ops[3].to_dict()]


# ---------------------------------------------------------------- indeterminate ops


def test_timed_out_write_later_read_took_effect() -> None:
    ops = numbered(write("1", 0, 1), write("2", 2, None), read("1", 2.5, 3), read("2", 8, 9))
    result = verdict(ops)
    assert result.valid
    assert result.indeterminate == 1


def test_timed_out_write_never_read_may_not_have_taken_effect() -> None:
    ops = numbered(write("1", 0, 1), write("2", 2, None), read("1", 8, 9), read("1", 10, 11))
    assert verdict(ops).valid


def test_timed_out_write_read_before_it_was_sent() -> None:
    ops = numbered(write("1", 0, 1), read("2", 2, 3), write("2", 4, None))
    (anomaly,) = verdict(ops).anomalies
    assert anomaly.kind is AnomalyKind.NOT_LINEARIZABLE  # a value from the future
    assert anomaly.culprit is ops[1]
    assert anomaly.stretch == (ops[1], ops[2])  # the write is kept: the read observes it


def test_timed_out_write_must_take_effect_before_its_first_reader_answered() -> None:
    # '2' was read at [3, 4], so the timed-out write took effect by 4; the write of '3'
    # completed before the second read began, so that read cannot see '2' again
    ops = numbered(
        write("2", 0, None),
        read("2", 3, 4),
        write("3", 5, 6),
        read("2", 7, 8),
    )
    (anomaly,) = verdict(ops).anomalies
    assert anomaly.kind is AnomalyKind.LOST_WRITE  # nobody saw '3'
    assert anomaly.culprit is ops[3]
    assert anomaly.stretch == tuple(ops)  # without the first read, '2' could come after '3'
    assert anomaly.could_see == ("3",)


def test_timed_out_cas_whose_value_is_seen() -> None:
    ops = numbered(write("1", 0, 1), cas("1", "2", 2, None), read("2", 5, 6))
    assert verdict(ops).valid
    # it could only have taken effect while '1' was current, before '3' was written
    spoiled = numbered(
        write("1", 0, 1),
        cas("1", "2", 2, None),
        write("3", 3, 4),
        read("3", 4.5, 4.8),
        read("2", 5, 6),
    )
    (anomaly,) = verdict(spoiled).anomalies
    assert anomaly.culprit is spoiled[4]
    assert anomaly.kind is AnomalyKind.NOT_LINEARIZABLE  # nobody saw '2' exist before
    assert anomaly.stretch == (spoiled[0], spoiled[1], spoiled[2], spoiled[4])
    assert anomaly.could_see == ("3",)


def test_timed_out_cas_chain_is_fed_through_its_expected_value() -> None:
    # the CAS 2->3 is seen, so it took effect; it expected '2', so the timed-out write of
    # '2' took effect before it, although nobody read '2'
    ops = numbered(write("2", 0, None), cas("2", "3", 1, None), read("3", 5, 6))
    assert verdict(ops).valid
    without_the_write = numbered(cas("2", "3", 1, None), read("3", 5, 6))
    assert not verdict(without_the_write).valid


# ---------------------------------------------------------------- values written twice


def test_repeated_values_fall_back_to_open_ended_writes() -> None:
    # 'a' is written twice; the first read of 'a' may have seen the acknowledged write, so
    # it sets no deadline for the timed-out one, which can take effect after 'b'
    ops = numbered(
        write("a", 0, 1),
        write("a", 1.5, None),
        read("a", 2, 3),
        write("b", 4, 5),
        read("a", 6, 7),
    )
    assert verdict(ops).valid
    # the timed-out write sent after the last read cannot explain it
    late = numbered(write("a", 0, 1), write("b", 4, 5), read("a", 6, 7), write("a", 8, None))
    (anomaly,) = verdict(late).anomalies
    assert anomaly.culprit is late[2]
    assert anomaly.kind is AnomalyKind.LOST_WRITE


def test_initial_value_written_again() -> None:
    # the initial 'x' is read early, so the read sets no deadline for the timed-out
    # write of 'x', which can take effect after 'y'
    ops = numbered(write("x", 0, None), read("x", 0.5, 0.8), write("y", 1, 2), read("x", 3, 4))
    assert verdict(ops, initial="x").valid
    assert not verdict(numbered(read("x", 0.5, 0.8), write("y", 1, 2), read("x", 3, 4))).valid


@pytest.mark.parametrize("write_first", [True, False])
def test_a_timed_out_write_and_cas_of_one_value_are_not_interchangeable(
    write_first: bool,
) -> None:
    # both may have written 'a' (so neither has a deadline); the read of 'a' at [3, 4]
    # may have seen either; after 'z', only the write can give 'a' again: the search must
    # keep both choices, not fold them as if the two ops were alike (in both orders, so
    # whichever the search meets first)
    both = [write("a", 2, None), cas("e", "a", 2, None)]
    ops = numbered(
        write("e", 0, 1),
        *(both if write_first else both[::-1]),
        read("a", 3, 4),
        write("z", 5, 6),
        read("a", 7, 8),
    )
    assert verdict(ops).valid


# ---------------------------------------------------------------- another model


class Counter:
    """A model of our own, to judge with the generic search: ``incr`` adds one, ``get``
    returns the count (as text)."""

    name = "counter"
    kinds = frozenset(("incr", "get"))

    def init(self, initial: str | None) -> Hashable:
        return int(initial or 0)

    def step(self, state: Hashable, op: Op) -> Hashable | None:
        if op.kind == "incr":
            return UNKNOWN if state is UNKNOWN else int(str(state)) + 1
        if state is UNKNOWN:
            return int(str(op.result))
        return state if op.result == str(state) else None

    def ops(self) -> OpMix:
        return requests()


def test_another_model_is_judged_by_the_generic_search() -> None:
    def incr(send: float, recv: float | None) -> Op:
        return _op("incr", send, recv, OK if recv is not None else TMO)

    def get(count: int, send: float, recv: float) -> Op:
        return _op("get", send, recv, OK, result=str(count))

    ops = numbered(incr(0, 1), incr(0.5, None), get(1, 2, 3), incr(4, 5), get(3, 6, 7))
    result = check(ops, Counter())
    assert result.valid
    assert result.model == "counter"
    bad = numbered(incr(0, 1), get(1, 2, 3), incr(4, 5), get(1, 6, 7))
    (anomaly,) = check(bad, Counter()).anomalies
    assert anomaly.culprit is bad[3]
    assert anomaly.kind is AnomalyKind.NOT_LINEARIZABLE
    assert anomaly.stretch == tuple(bad)  # no safe deletions without knowing the model
    with pytest.raises(ValueError, match="the counter model cannot judge op 0 of kind 'read'"):
        check(numbered(read("1", 0, 1)), Counter())


# ---------------------------------------------------------------- bad input


def test_an_op_kind_the_model_does_not_know() -> None:
    ops = numbered(write("1", 0, 1), replace(read("1", 2, 3), kind="increment"))
    with pytest.raises(ValueError) as raised:
        check(ops)
    message = str(raised.value)
    assert "'increment'" in message
    assert "the register model" in message
    assert "cas, read, write" in message
    request = numbered(replace(read("1", 2, 3), kind=OpKind.REQUEST))
    with pytest.raises(ValueError, match="'request'"):
        check(request)


def test_register_model_steps() -> None:
    model = Register()
    assert model.init(None) == (None,)
    assert model.step((None,), write("1", 0, 1)) == ("1",)
    assert model.step(("1",), read("1", 0, 1)) == ("1",)
    assert model.step(("2",), read("1", 0, 1)) is None
    assert model.step(("1",), cas("1", "2", 0, 1)) == ("2",)
    assert model.step(("3",), cas("1", "2", 0, 1)) is None
    assert model.step(("3",), cas("1", "2", 0, 1, outcome=REJ, result="3")) == ("3",)
    assert model.step(("1",), cas("1", "2", 0, 1, outcome=REJ)) is None
    assert model.ops().route(OpKind.READ) is None
