"""Control: traffic well over the limit on a healthy cluster. The limiter blocks the
excess, and blocking is not a fault: nothing is violated, nothing is diagnosed, and
the client history shows the limit held exactly."""

from __future__ import annotations

import pytest

from pytest_operator import steady

pytestmark = pytest.mark.subject("ratelimiter", limit=100)


async def test_blocking_over_the_limit_is_not_a_fault(operator, workload):
    await workload.start(steady(rate=300), keys="k1")
    run = await operator.monitor(timeout=5.0)
    run.assert_no_violation()
    outcomes = {op.outcome for op in workload.history.ops}
    assert {"ok", "rejected"} <= outcomes, "some requests were admitted and some blocked"
    await operator.assert_no_fault_diagnosed(run)
