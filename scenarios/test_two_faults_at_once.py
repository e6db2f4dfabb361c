"""Two faults at once, on two different nodes: node-1's link to Redis slows down (150 ms;
Redis timeout raised to 1 s so its calls still succeed) while the clients' link to node-3
is cut. Each is detected where it happened, and the diagnosis ranks both causes within
its top 2."""

from __future__ import annotations

import pytest

from pytest_operator import compose, latency, partition, steady

pytestmark = pytest.mark.subject("ratelimiter", redis_timeout_ms=1000)


@pytest.mark.chaos(compose(latency("node-1", "redis", ms=150), partition("client", "node-3")))
async def test_two_faults_are_both_diagnosed(operator, workload):
    await workload.start(steady(rate=90), keys=["k1", "k2"])
    run = await operator.monitor(until="high_latency", timeout=20, settle=1.5)
    run.assert_detected("high_latency", within=12.0, component="node-1")
    run.assert_detected("request_errors", within=12.0, component="node-3")
    await operator.assert_diagnosis(run)  # both causes within the top 2
