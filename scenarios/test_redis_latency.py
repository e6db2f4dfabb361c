"""150 ms of latency on node-2's link to Redis (Redis timeout raised to 1 s so the
calls still succeed): node-2's decisions slow down, the other nodes' do not, and the
diagnosis names latency on node-2 <-> redis, not a partition."""

from __future__ import annotations

import pytest

from pytest_operator import latency, steady

pytestmark = pytest.mark.subject("ratelimiter", redis_timeout_ms=1000)


@pytest.mark.chaos(latency("node-2", "redis", ms=150))
async def test_latency_on_one_redis_link_slows_only_that_node(operator, workload):
    await workload.start(steady(rate=100), keys="k1")
    run = await operator.monitor(until="high_latency", timeout=15, settle=1.0)
    run.assert_detected("high_latency", within=10.0, component="node-2")
    for other in ("node-1", "node-3"):
        assert run.first("high_latency", other) is None, f"{other} stayed fast"
    assert run.first("redis_disconnected") is None, "the slow link never failed"
    await operator.assert_diagnosis(run)
