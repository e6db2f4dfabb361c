"""The same burst at the window edge against `sliding_log`, which is exact: no
window of the limit's length admits more than the limit, and nothing is diagnosed."""

from __future__ import annotations

import pytest

from pytest_operator import boundary_burst

pytestmark = pytest.mark.subject("ratelimiter", algorithm="sliding_log", limit=50)

BURST = boundary_burst(window_ms=1000, count=100, spread_ms=100, edges=3, lead_ms=700)


async def test_boundary_burst_is_held_by_sliding_log(operator, workload):
    await workload.start(BURST, keys="k1")
    await workload.wait()
    run = await operator.monitor(timeout=2.0)
    run.assert_no_violation()
    admitted = [op for op in workload.history.ops if op.outcome == "ok"]
    assert 0 < len(admitted) <= 3 * 50 + 10, "the limiter admitted and blocked as configured"
    await operator.assert_no_fault_diagnosed(run)
