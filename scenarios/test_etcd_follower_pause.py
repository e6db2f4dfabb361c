"""An etcd follower is frozen (SIGSTOP): its probes time out, the leader keeps its quorum
with the other members (no election), and the diagnosis names a pause of that follower.
The clients' history (reads, writes, compare-and-sets) stays linearizable."""

from __future__ import annotations

import pytest

from pytest_operator import follower, pause, steady

pytestmark = pytest.mark.subject("etcd")


@pytest.mark.chaos(pause(follower()))
async def test_frozen_follower_is_detected_and_the_leader_stays(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    run = await operator.monitor(until="member_down", timeout=20, settle=3.0)
    frozen = operator.expected_cause().component
    run.assert_detected("member_down", within=5.0, component=frozen)
    run.assert_no_violation("no_leader", "leader_change", "split_brain", "linearizable")
    await operator.assert_diagnosis(run)
    result = operator.check_history()
    assert result.valid, result.summary()
