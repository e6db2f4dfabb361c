"""Control: steady reads, writes and compare-and-sets (linearizable reads) on a healthy etcd
cluster. Nothing may be violated, no engine may name a fault (the false-positive check),
and the clients' history is linearizable."""

from __future__ import annotations

import pytest

from pytest_operator import OpKind, Outcome, steady

pytestmark = pytest.mark.subject("etcd")


async def test_healthy_cluster_with_steady_writes_and_reads_shows_no_violation(operator, workload):
    await workload.start(steady(rate=50), keys=["k1", "k2", "k3"])
    run = await operator.monitor(timeout=6.0)
    run.assert_no_violation()
    await operator.assert_no_fault_diagnosed(run)
    ops = workload.history.snapshot()
    assert len(ops) >= 100, len(ops)
    assert {op.kind for op in ops} == {OpKind.READ, OpKind.WRITE, OpKind.CAS}
    # every op answered; only a compare-and-set may be refused (its compare failed)
    refused = [op for op in ops if op.outcome is Outcome.REJECTED]
    assert all(op.kind == OpKind.CAS for op in refused), refused[:5]
    assert all(op.outcome in (Outcome.OK, Outcome.REJECTED) for op in ops), ops[-5:]
    result = operator.check_history()
    assert result.valid and result.ops >= 100, result.summary()
