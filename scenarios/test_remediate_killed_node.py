"""The loop closed: a node is killed and left down, the operator diagnoses a crash,
restarts the node through its catalogue (approved by the scenario's approver, as a
person would), and the cluster is healthy again for a sustained stretch, the time to
recover measured from the restart."""

from __future__ import annotations

import pytest

from pytest_operator import Action, FaultKind, kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


async def approve_restarts(action: Action, args: object) -> bool:
    return FaultKind.CRASH in action.remedies


async def test_killed_node_is_restarted_by_the_operator_and_recovers(operator, chaos, workload):
    await workload.start(steady(rate=100), keys="k1")
    injection = await chaos.leave(kill("node-1"))
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", within=5.0, component="node-1")
    await operator.assert_diagnosis(run)

    operator.actions.approver = approve_restarts
    remediation = await operator.remediate(run)
    assert [(s.action, s.args, s.outcome) for s in remediation.steps] == [
        ("restart_node", (("node", "node-1"),), "ok")
    ]
    recovery = await operator.assert_recovered(remediation, within=15.0, sustain=2.0)
    assert 0 <= recovery.time_to_recover <= 15.0
    assert injection.left_in_place and injection.active  # nothing but the operator healed it
    assert [e.outcome for e in operator.actions.audit] == ["ok"]
