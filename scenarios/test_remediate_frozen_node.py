"""A node is frozen (SIGSTOP) and left frozen: the operator diagnoses a pause, restarts
the node through its catalogue (approved by the scenario's approver: only actions that
remedy a pause), and the cluster is healthy again for a sustained stretch, the time to
recover measured from the restart."""

from __future__ import annotations

import pytest

from pytest_operator import Action, FaultKind, pause, steady

pytestmark = pytest.mark.subject("ratelimiter")


async def approve_pause_remedies(action: Action, args: object) -> bool:
    return FaultKind.PAUSE in action.remedies


async def test_frozen_node_is_restarted_by_the_operator_and_recovers(operator, chaos, workload):
    await workload.start(steady(rate=100), keys="k1")
    injection = await chaos.leave(pause("node-2"))
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", within=8.0, component="node-2")
    await operator.assert_diagnosis(run)

    operator.actions.approver = approve_pause_remedies
    remediation = await operator.remediate(run)
    assert [(s.action, s.args, s.outcome) for s in remediation.steps] == [
        ("restart_node", (("node", "node-2"),), "ok")
    ]
    recovery = await operator.assert_recovered(remediation, within=20.0, sustain=2.0)
    assert 0 <= recovery.time_to_recover <= 20.0
    assert injection.left_in_place  # nobody but the operator brought it back
    assert [e.outcome for e in operator.actions.audit] == ["ok"]
