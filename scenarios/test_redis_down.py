"""Redis is killed: every node loses it at once (redis_disconnected everywhere), and
the diagnosis names a crash of Redis, not a partition of one node's link."""

from __future__ import annotations

import pytest

from pytest_operator import kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


@pytest.mark.chaos(kill("redis"))
async def test_redis_down_disconnects_every_node(operator, workload):
    await workload.start(steady(rate=100), keys="k1")
    run = await operator.monitor(until="redis_disconnected", timeout=15, settle=1.0)
    for node in ("node-1", "node-2", "node-3"):
        run.assert_detected("redis_disconnected", within=5.0, component=node)
    await operator.assert_diagnosis(run)
