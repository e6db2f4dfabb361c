"""Control: steady writes and linearizable reads on a healthy etcd cluster. Nothing may be
violated and no engine may name a fault (the false-positive check)."""

from __future__ import annotations

import pytest

from pytest_operator import steady

pytestmark = pytest.mark.subject("etcd")


async def test_healthy_cluster_with_steady_writes_and_reads_shows_no_violation(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    run = await operator.monitor(timeout=6.0)
    run.assert_no_violation()
    await operator.assert_no_fault_diagnosed(run)
    ops = workload.history.snapshot()
    assert len(ops) >= 100 and all(op.outcome.value == "ok" for op in ops), ops[-5:]
