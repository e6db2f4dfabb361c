"""A node is killed (SIGKILL): the monitor sees it stop answering, and the diagnosis
names a crash of that node, not a pause and not a network fault."""

from __future__ import annotations

import pytest

from pytest_operator import kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


@pytest.mark.chaos(kill("node-1"))
async def test_killed_node_is_detected_and_diagnosed_as_a_crash(operator, workload):
    await workload.start(steady(rate=100), keys="k1")
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", within=5.0, component="node-1")
    await operator.assert_diagnosis(run)
