"""The engine's side of history checking: the operator judges the test's history against
the subject's model (in-flight ops count as indeterminate), and a history invariant turns
a checker's safety violations into findings."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pytest_operator import (
    AnomalyKind,
    Category,
    Observation,
    OpKind,
    Register,
    SafetyViolation,
    history_invariant,
)
from pytest_operator._history import History, Op, Outcome
from pytest_operator._operator import InjectionLog, Operator
from pytest_operator._topology import Topology


def _op(
    index: int,
    kind: OpKind,
    send: float,
    recv: float | None,
    *,
    value: str | None = None,
    result: str | None = None,
    target: str = "m-1",
) -> Op:
    outcome = Outcome.OK if recv is not None else Outcome.TIMEOUT
    return Op(index, target, "k", send, send, recv, outcome, kind=kind, value=value, result=result)


class Session:
    """A session with what the operator reads of it (no cluster: the history is built)."""

    def __init__(self, model: Register | None) -> None:
        self.model = model
        self.topology = Topology((), ())
        self.invariants: Sequence[object] = ()
        self.actions: Sequence[object] = ()
        self.targets = ("m-1", "m-2")

    async def observe(self) -> Observation:
        return Observation(at=0.0)


def _operator(session: Session, history: History) -> Operator:
    return Operator(session, InjectionLog(), interval=0.1, history=history)  # type: ignore[arg-type]


def test_the_operator_checks_the_history_against_the_subjects_model() -> None:
    history = History(
        [
            _op(0, OpKind.WRITE, 1.0, 1.1, value="1"),
            _op(1, OpKind.WRITE, 2.0, 2.1, value="2"),
            _op(2, OpKind.READ, 3.0, 3.1, result="1", target="m-2"),  # '2' was written
        ]
    )
    op = _operator(Session(Register()), history)
    result = op.check_history()
    assert not result.valid
    (anomaly,) = result.anomalies
    assert anomaly.kind is AnomalyKind.LOST_WRITE  # nobody ever saw '2'
    assert anomaly.culprit.index == 2 and anomaly.culprit.target == "m-2"
    assert op.checks == [result]  # kept for the report
    history.append(_op(3, OpKind.READ, 4.0, 4.1, result="2", target="m-1"))
    (anomaly,) = op.check_history().anomalies
    assert anomaly.kind is AnomalyKind.STALE_READ  # m-1 saw '2': m-2 was behind
    assert [o.index for o in anomaly.stretch] == [0, 1, 2]
    assert len(op.checks) == 2


def test_ops_in_flight_count_as_indeterminate() -> None:
    # A read saw '2' while the write of '2' is still in flight: without the in-flight op
    # the read would have seen a value never written.
    history = History([_op(0, OpKind.WRITE, 1.0, 1.1, value="1")])
    history.invoked(_op(1, OpKind.WRITE, 2.0, None, value="2"))
    history.append(_op(2, OpKind.READ, 2.5, 2.6, result="2"))
    result = _operator(Session(Register()), history).check_history()
    assert result.valid, result.summary()
    assert result.indeterminate == 1


def test_a_subject_without_a_model_cannot_be_checked() -> None:
    op = _operator(Session(None), History())
    with pytest.raises(AssertionError, match="declares no consistency model"):
        op.check_history()


def test_a_history_invariant_finds_its_property_at_each_component() -> None:
    inv = history_invariant("linearizable", "linearizable")
    assert inv.category is Category.CONSISTENCY and inv.grace == 0.0
    obs = Observation(
        at=5.0,
        safety=(
            SafetyViolation("linearizable", ("m-2",), 1.0, 0.0, 4.0, "m-2 read a stale value"),
            SafetyViolation("ghost_allowing", ("m-1",), 12.0, 10.0, 4.0, "over the limit"),
        ),
    )
    findings = inv.check(obs)
    assert [(f.component, f.message) for f in findings] == [("m-2", "m-2 read a stale value")]
    assert inv.check(Observation(at=6.0)) == []
