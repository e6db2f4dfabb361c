"""A burst timed just before and just after a window edge, against `fixed_window`:
both windows admit their full limit, so a window of the limit's length straddling
the edge admits up to twice the limit. That is the algorithm's documented edge
behaviour, and the history shows it as ghost allowing. No infrastructure signal:
the diagnosis names the traffic (overload from the clients)."""

from __future__ import annotations

import pytest

from pytest_operator import FaultKind, RootCause, boundary_burst

pytestmark = pytest.mark.subject("ratelimiter", algorithm="fixed_window", limit=50)

BURST = boundary_burst(window_ms=1000, count=100, spread_ms=100, edges=3, lead_ms=700)


async def test_boundary_burst_over_admits_with_fixed_window(operator, workload):
    await workload.start(BURST, keys="k1")
    run = await operator.monitor(until="ghost_allowing", timeout=15)
    violation = run.assert_detected("ghost_allowing")
    assert violation.value is not None and violation.value > 50
    await operator.assert_diagnosis(run, expected=RootCause(FaultKind.OVERLOAD, "client"))
