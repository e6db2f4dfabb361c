"""A minority of followers is cut from the rest (Jepsen's minority partition; with three
members, one follower alone): the minority loses its leader and cannot commit, the
majority keeps its leader (no election). The diagnosis names the split (with three
members: the follower's isolation).
The clients' history (reads, writes, compare-and-sets) stays linearizable."""

from __future__ import annotations

import pytest

from pytest_operator import split, split_minority, steady

pytestmark = pytest.mark.subject("etcd")


@pytest.mark.chaos(split(split_minority()))
async def test_minority_loses_quorum_and_the_majority_keeps_its_leader(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    # settle: links between two followers show cut only once etcd's own timeouts pass
    run = await operator.monitor(until="no_leader", timeout=20, settle=6.0)
    cause = operator.expected_cause()
    minority = min(cause.groups, key=len) if cause.groups else (cause.component,)
    for member in minority:
        run.assert_detected("no_leader", within=6.0, component=member)
    run.assert_no_violation("member_down", "leader_change", "split_brain", "linearizable")
    await operator.assert_diagnosis(run)
    result = operator.check_history()
    assert result.valid, result.summary()
