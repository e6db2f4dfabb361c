"""A dry run on a real cluster (as ``--operator-dry-run`` sets it): node-1 is killed and
left down, the operator detects and diagnoses the crash and says what it would do
(restart_node), but runs nothing: the step is a dry run, there is no recovery to measure,
and the node is still down."""

from __future__ import annotations

import pytest

from pytest_operator import NotRecovered, kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


async def test_dry_run_names_the_fix_and_runs_nothing(operator, chaos, workload):
    operator.actions.dry_run = True
    await workload.start(steady(rate=100), keys="k1")
    await chaos.leave(kill("node-1"))
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", within=5.0, component="node-1")
    await operator.assert_diagnosis(run)

    remediation = await operator.remediate(run)
    assert [(s.action, s.args, s.outcome) for s in remediation.steps] == [
        ("restart_node", (("node", "node-1"),), "dry-run")
    ]
    assert not remediation.ok
    with pytest.raises(NotRecovered):
        await operator.assert_recovered(remediation, within=5.0)
    assert [(e.action, e.outcome, e.attempts) for e in operator.actions.audit] == [
        ("restart_node", "dry-run", 0)
    ]
    still = await operator.monitor(until="node_down", timeout=10)
    still.assert_detected("node_down", component="node-1")
