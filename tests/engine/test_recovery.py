"""wait_recovered(): a sustained healthy stretch after the first action, and, for a
subject with a consistency model, a client history after the fix that satisfies it
(the fault's own anomalies, before the fix, are not the recovery's)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from pytest_operator._actions import Decision
from pytest_operator._history import History, Op, OpKind, Outcome
from pytest_operator._linearizable import Register
from pytest_operator._remediation import (
    NotRecovered,
    Remediation,
    Step,
    judge_after,
    wait_recovered,
)
from pytest_operator._signals import Observation


def _op(kind: OpKind, send: float, recv: float, **fields: str | None) -> Op:
    return Op(
        index=-1,
        target=str(fields.pop("target", "n1")),
        key="k",
        scheduled=send,
        send=send,
        recv=recv,
        outcome=Outcome.OK,
        kind=kind,
        **fields,  # type: ignore[arg-type]  # value / result: str | None
    )


def history(*ops: Op) -> History:
    return History(replace(op, index=i) for i, op in enumerate(ops))


def fault_then_fix(t0: float, after: list[Op]) -> History:
    """A stale read during the fault (before t0 + 10), then what came after the fix."""
    return history(
        _op(OpKind.WRITE, t0 + 0, t0 + 1, value="a"),
        _op(OpKind.WRITE, t0 + 2, t0 + 3, value="b"),
        _op(OpKind.READ, t0 + 4, t0 + 5, result="a", target="n3"),  # stale: the fault's
        _op(OpKind.WRITE, t0 + 11, t0 + 12, value="c"),
        *after,
    )


def test_only_anomalies_after_the_fix_are_the_recoverys() -> None:
    t0 = time.time() - 100
    fine = fault_then_fix(t0, [_op(OpKind.READ, t0 + 13, t0 + 14, result="c")])
    judged, anomalies = judge_after(fine, Register(), t0 + 10)
    assert (judged, anomalies) == (2, ())

    stale = fault_then_fix(t0, [_op(OpKind.READ, t0 + 13, t0 + 14, result="b", target="n3")])
    judged, anomalies = judge_after(stale, Register(), t0 + 10)
    assert judged == 2
    assert [(a.kind, a.culprit.send) for a in anomalies] == [("stale-read", t0 + 13)]


def remediation(started: float) -> Remediation:
    step = Step(
        "restart", (("node", "n3"),), "ok", "", 1, started, started, Decision.AUTO, "policy"
    )
    return Remediation("causal", "crash(n3)", (step,))


async def _healthy() -> Observation:
    return Observation(at=time.time())


async def test_recovery_needs_the_history_after_the_fix_to_satisfy_the_model() -> None:
    now = time.time()
    good = history(
        _op(OpKind.WRITE, now - 5, now - 4, value="a"),
        _op(OpKind.READ, now + 0.02, now + 0.05, result="a"),
    )
    recovery = await wait_recovered(
        remediation(now),
        _healthy,
        (),
        within=5,
        sustain=0.3,
        interval=0.05,
        history=good,
        model=Register(),
    )
    assert recovery.history_ops == 1 and recovery.time_to_recover < 1.0

    now = time.time()
    bad = history(
        _op(OpKind.WRITE, now - 5, now - 4, value="a"),
        _op(OpKind.WRITE, now - 3, now - 2, value="b"),
        _op(OpKind.READ, now + 0.02, now + 0.05, result="a", target="n3"),
    )
    with pytest.raises(NotRecovered, match="history after the fix breaks the register model"):
        await wait_recovered(
            remediation(now),
            _healthy,
            (),
            within=5,
            sustain=0.3,
            interval=0.05,
            history=bad,
            model=Register(),
        )


async def test_time_waiting_for_the_approver_is_not_the_actions() -> None:
    from pytest_operator._actions import Action, ActionRunner, Args, Param, Risk
    from pytest_operator._causes import FaultKind, RootCause
    from pytest_operator._diagnosis import Diagnosis, Hypothesis, Recommendation
    from pytest_operator._remediation import remediate

    ran: list[float] = []

    async def restart(args: Args) -> str:
        ran.append(time.time())
        return "restarted"

    answered: list[float] = []

    async def slow_person(action: Action, args: Args) -> bool:
        await asyncio.sleep(0.5)  # a person reading the question
        answered.append(time.time())
        return True

    action = Action(
        "restart",
        "restart",
        Risk.HIGH,
        (Param("node", str, choices=("n3",)),),
        restart,
        remedies=frozenset({FaultKind.CRASH}),
        target="node",
    )
    runner = ActionRunner({"restart": action}, approver=slow_person)
    asked = time.time()
    done = await remediate(
        Diagnosis(
            "causal",
            (Hypothesis(RootCause(FaultKind.CRASH, "n3"), 0.9),),
            (Recommendation("restart", (("node", "n3"),)),),
        ),
        runner,
    )
    (step,) = done.steps
    assert step.outcome == "ok" and step.decision is Decision.APPROVED
    assert step.approved_by == "slow_person"
    assert answered[0] <= step.started_at <= ran[0]
    assert step.started_at - asked >= 0.5
    assert runner.audit[0].started_at == step.started_at
    recovery = await wait_recovered(done, _healthy, (), within=5, sustain=0.2, interval=0.05)
    assert recovery.time_to_recover < 0.4  # the half second of asking is not in it
