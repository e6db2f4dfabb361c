"""A node is frozen (SIGSTOP): it stops answering without dying. The monitor sees it
go silent, and the diagnosis names a pause (probes time out; nothing restarted),
not a crash."""

from __future__ import annotations

import pytest

from pytest_operator import pause, steady

pytestmark = pytest.mark.subject("ratelimiter")


@pytest.mark.chaos(pause("node-2"))
async def test_frozen_node_is_detected_and_diagnosed_as_a_pause(operator, workload):
    await workload.start(steady(rate=100), keys="k1")
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", within=8.0, component="node-2")
    await operator.assert_diagnosis(run)
