"""An etcd follower is killed (SIGKILL): the monitor sees it refuse its probe, the leader
and the other follower keep their quorum (no election), and the diagnosis names a crash
of that follower. The clients' history (reads, writes, compare-and-sets) stays linearizable."""

from __future__ import annotations

import pytest

from pytest_operator import follower, kill, steady

pytestmark = pytest.mark.subject("etcd")


@pytest.mark.chaos(kill(follower()))
async def test_killed_follower_is_detected_and_the_leader_stays(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    run = await operator.monitor(until="member_down", timeout=20, settle=3.0)
    killed = operator.expected_cause().component
    run.assert_detected("member_down", within=5.0, component=killed)
    run.assert_no_violation("no_leader", "leader_change", "split_brain", "linearizable")
    await operator.assert_diagnosis(run)
    result = operator.check_history()
    assert result.valid, result.summary()
