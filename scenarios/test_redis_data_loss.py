"""Redis restarts and loses every counter while traffic flows. Requests the limiter
had already counted are forgotten, so a window admits more than the limit. The
diagnosis names data loss in Redis (the monitor's canary vanished), not a crash."""

from __future__ import annotations

import pytest

from pytest_operator import steady

pytestmark = pytest.mark.subject("ratelimiter", limit=50, window_ms=5000)


async def test_redis_data_loss_forgets_counters(operator, workload, chaos):
    await workload.start(steady(rate=40), keys="k1")
    await operator.monitor(timeout=2.0)  # fill the window, and let the monitor see Redis
    async with chaos.restart_with_data_loss("redis"):
        run = await operator.monitor(until="ghost_allowing", timeout=15)
    run.assert_detected("ghost_allowing", within=10.0)
    await operator.assert_diagnosis(run)
