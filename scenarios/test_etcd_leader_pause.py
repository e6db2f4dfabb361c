"""The etcd leader is frozen (SIGSTOP): its probes time out (it did not restart), the other
members elect a new leader, and the diagnosis names a pause of the member that led, not
a crash. The clients' history (reads, writes, compare-and-sets) stays linearizable."""

from __future__ import annotations

import pytest

from pytest_operator import leader, pause, steady

pytestmark = pytest.mark.subject("etcd")


@pytest.mark.chaos(pause(leader()))
async def test_frozen_leader_is_detected_and_replaced(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    run = await operator.monitor(until="member_down", timeout=20, settle=3.0)
    frozen = operator.expected_cause().component
    run.assert_detected("member_down", within=5.0, component=frozen)
    run.assert_detected("leader_change", within=8.0)
    run.assert_no_violation("linearizable")
    await operator.assert_diagnosis(run)
    result = operator.check_history()
    assert result.valid, result.summary()
