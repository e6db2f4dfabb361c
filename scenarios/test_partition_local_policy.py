"""node-2 loses Redis while clients still reach it. With the `local` failure policy it
keeps deciding from an in-process counter: its view of the counter drifts from Redis,
and together the cluster admits more than the limit (ghost allowing). The diagnosis
names the cut link, node-2 <-> redis, not a crash of Redis or of node-2."""

from __future__ import annotations

import pytest

from pytest_operator import partition, steady

pytestmark = pytest.mark.subject("ratelimiter", policy="local", limit=100, window_ms=2000)


@pytest.mark.chaos(partition("node-2", "redis"))
async def test_partition_with_local_policy_drifts_and_over_admits(operator, workload):
    await workload.start(steady(rate=150), keys="k1")
    run = await operator.monitor(until="ghost_allowing", timeout=20)
    run.assert_detected("counter_drift", within=10.0, component="node-2")
    run.assert_detected("ghost_allowing", within=15.0)
    run.assert_detected("redis_disconnected", component="node-2")
    assert run.first("redis_disconnected", "node-1") is None, "node-1 kept its Redis link"
    await operator.assert_diagnosis(run)
