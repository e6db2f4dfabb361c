"""The cluster is split so that no group holds a majority (3 -> 1|1|1, 5 -> 2|2|1): every
member answers the monitor, none can commit, the leader steps down. The diagnosis names
the split. The clients' history (reads, writes, compare-and-sets) stays linearizable."""

from __future__ import annotations

import pytest

from pytest_operator import split, split_no_quorum, steady

pytestmark = pytest.mark.subject("etcd")


@pytest.mark.chaos(split(split_no_quorum()))
async def test_no_group_has_a_majority_so_nobody_commits(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    # settle: links between two followers show cut only once etcd's own timeouts pass
    run = await operator.monitor(until="no_leader", timeout=20, settle=6.0)
    for member in operator.session.targets:
        run.assert_detected("no_leader", within=6.0, component=member)
    run.assert_detected("client_errors", within=8.0)  # clients' requests time out
    run.assert_no_violation("member_down", "split_brain", "linearizable")
    await operator.assert_diagnosis(run)
    result = operator.check_history()
    assert result.valid, result.summary()
