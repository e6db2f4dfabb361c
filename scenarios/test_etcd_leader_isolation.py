"""The etcd leader is cut from every peer, both ways (iptables): it still answers the
monitor, but it can no longer commit and steps down; the majority elects a new leader.
The diagnosis names the isolation of the member that led.
The clients' history (reads, writes, compare-and-sets) stays linearizable."""

from __future__ import annotations

import pytest

from pytest_operator import isolate, leader, steady

pytestmark = pytest.mark.subject("etcd")


@pytest.mark.chaos(isolate(leader()))
async def test_isolated_leader_loses_quorum_and_the_majority_elects_another(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    run = await operator.monitor(until="no_leader", timeout=20, settle=3.0)
    isolated = operator.expected_cause().component
    run.assert_detected("no_leader", within=5.0, component=isolated)
    run.assert_detected("leader_change", within=8.0)
    run.assert_no_violation("member_down", "split_brain", "linearizable")
    await operator.assert_diagnosis(run)
    result = operator.check_history()
    assert result.valid, result.summary()
