"""Control: steady traffic under the limit on a healthy cluster. Nothing may be
violated and no engine may name a fault (the false-positive check)."""

from __future__ import annotations

import pytest

from pytest_operator import steady

pytestmark = pytest.mark.subject("ratelimiter")


async def test_healthy_cluster_under_the_limit_shows_no_violation(operator, workload):
    await workload.start(steady(rate=60), keys=["k1", "k2", "k3"])
    run = await operator.monitor(timeout=5.0)
    run.assert_no_violation()
    await operator.assert_no_fault_diagnosed(run)
