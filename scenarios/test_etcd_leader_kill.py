"""The etcd leader is killed (SIGKILL): the monitor sees it refuse its probe at once, the
other members elect a new leader within the election timeout, and the diagnosis names a
crash of the member that led.
The clients' history (reads, writes, compare-and-sets) stays linearizable."""

from __future__ import annotations

import pytest

from pytest_operator import kill, leader, steady

pytestmark = pytest.mark.subject("etcd")


@pytest.mark.chaos(kill(leader()))
async def test_killed_leader_is_detected_and_replaced(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    run = await operator.monitor(until="member_down", timeout=20, settle=3.0)
    killed = operator.expected_cause().component
    run.assert_detected("member_down", within=5.0, component=killed)
    run.assert_detected("leader_change", within=8.0)  # the others elected another leader
    run.assert_no_violation("linearizable")
    await operator.assert_diagnosis(run)
    result = operator.check_history()
    assert result.valid, result.summary()
