"""A follower is cut from every peer (iptables, both ways) while clients read from it and
write to the majority (Jepsen's stale-read test of etcd).

With serializable reads (``serializable: true``: a member answers from its own state,
without asking the leader) the isolated follower keeps serving the values it had while
the majority overwrites them: stale reads. The compare-and-sets on the majority see the
newer values, so the history checker can tell a stale read from a lost write. The
monitor's ``linearizable`` invariant flags it at the isolated member, the full check of
the history names the stale read, and the diagnosis names the isolation (the member
serves state it can no longer update).

The control: the same isolation with linearizable reads (etcd's default). The isolated
follower cannot confirm a read with a leader, so its reads fail and none is stale; the
history is linearizable.
"""

from __future__ import annotations

import uuid

import pytest

from pytest_operator import (
    AnomalyKind,
    OpKind,
    Outcome,
    follower,
    isolate,
    register_ops,
    steady,
)

pytestmark = pytest.mark.subject("etcd")


def fresh_keys() -> list[str]:
    """Keys no earlier scenario wrote: an isolated follower that had not yet applied the
    last reset would otherwise serve an older scenario's values."""
    run = uuid.uuid4().hex[:8]
    return [f"stale-{run}-{i}" for i in range(1, 6)]


@pytest.mark.chaos(isolate(follower(0)))
async def test_linearizable_reads_at_an_isolated_follower_fail_and_none_is_stale(
    operator, workload
):
    isolated = operator.expected_cause().component
    majority = [m for m in operator.session.targets if m != isolated]
    ops = register_ops(reads_on=[isolated], writes_on=majority)
    await workload.start(steady(rate=50), keys=fresh_keys(), ops=ops)
    run = await operator.monitor(until="no_leader", timeout=20, settle=4.0)
    run.assert_detected("no_leader", within=6.0, component=isolated)
    run.assert_no_violation("linearizable", "split_brain")
    await operator.assert_diagnosis(run)
    history = workload.history.snapshot()
    reads = [op for op in history if op.kind == OpKind.READ]
    assert len(reads) >= 50 and {op.target for op in reads} == {isolated}
    assert all(op.outcome is Outcome.ERROR for op in reads), [
        op for op in reads if op.outcome is not Outcome.ERROR
    ][:3]
    written = [op for op in history if op.kind == OpKind.WRITE and op.outcome is Outcome.OK]
    assert len(written) >= 20, len(written)  # the majority kept committing
    result = operator.check_history()
    assert result.valid and result.ops >= 100, result.summary()


@pytest.mark.subject("etcd", reads="serializable")
@pytest.mark.chaos(isolate(follower(0)))
async def test_serializable_reads_at_an_isolated_follower_are_stale_and_the_isolation_is_named(
    operator, workload
):
    isolated = operator.expected_cause().component
    majority = [m for m in operator.session.targets if m != isolated]
    # mostly compare-and-sets on the majority: each one that succeeds saw the value before
    # it, so the checker can tell a read that missed it (stale) from a write nobody saw
    ops = register_ops(read=0.5, write=0.1, cas=0.4, reads_on=[isolated], writes_on=majority)
    await workload.start(steady(rate=50), keys=fresh_keys(), ops=ops)
    # settle: the isolated member's loss of its leader shows only after the election timeout
    run = await operator.monitor(until="linearizable", timeout=20, settle=6.0)
    run.assert_detected("linearizable", within=5.0, component=isolated)
    run.assert_no_violation("split_brain")
    result = operator.check_history()
    assert not result.valid, result.summary()
    stale = [a for a in result.anomalies if a.kind is AnomalyKind.STALE_READ]
    assert stale, result.summary()
    for anomaly in stale:
        culprit = anomaly.culprit
        assert (culprit.target, culprit.kind) == (isolated, OpKind.READ), anomaly.describe()
        assert culprit.result not in anomaly.could_see, anomaly.describe()
    await operator.assert_diagnosis(run)
