"""node-3's clock runs 30 s ahead (libfaketime) while nodes pass their own clocks to
Redis (`clock=node`). node-3 trims everyone else's entries as expired and the others
count node-3's entries as current: the cluster admits more than the limit. The
diagnosis names the skewed clock on node-3."""

from __future__ import annotations

import pytest

from pytest_operator import clock_skew, steady

pytestmark = pytest.mark.subject("ratelimiter", clock="node", limit=100)


@pytest.mark.chaos(clock_skew("node-3", 30))
async def test_skewed_node_clock_breaks_the_limit(operator, workload):
    await workload.start(steady(rate=150), keys="k1")
    run = await operator.monitor(until="ghost_allowing", timeout=20)
    run.assert_detected("clock_skew", component="node-3")
    run.assert_detected("ghost_allowing", within=15.0)
    await operator.assert_diagnosis(run)
