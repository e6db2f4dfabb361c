"""An etcd follower is killed and left down: the operator diagnoses a crash of that member,
restarts it on its data through etcd's catalogue (restart_member, high risk, approved by
the scenario's approver: only actions that remedy a crash), the member rejoins and the
cluster is healthy again for a sustained stretch. The clients' history stays
linearizable through the fault and the fix."""

from __future__ import annotations

import pytest

from pytest_operator import Action, FaultKind, follower, kill, steady

pytestmark = pytest.mark.subject("etcd")


async def approve_crash_remedies(action: Action, args: object) -> bool:
    return FaultKind.CRASH in action.remedies


async def test_killed_member_is_restarted_by_the_operator_and_rejoins(operator, chaos, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    injection = await chaos.leave(kill(follower()))
    run = await operator.monitor(until="member_down", timeout=20, settle=3.0)
    killed = operator.expected_cause().component
    run.assert_detected("member_down", within=5.0, component=killed)
    await operator.assert_diagnosis(run)

    operator.actions.approver = approve_crash_remedies
    remediation = await operator.remediate(run)
    assert [(s.action, s.args, s.outcome) for s in remediation.steps] == [
        ("restart_member", (("member", killed),), "ok")
    ]
    recovery = await operator.assert_recovered(remediation, within=30.0, sustain=3.0)
    assert 0 <= recovery.time_to_recover <= 30.0
    assert injection.left_in_place
    assert [e.outcome for e in operator.actions.audit] == ["ok"]
    result = operator.check_history()
    assert result.valid, result.summary()
