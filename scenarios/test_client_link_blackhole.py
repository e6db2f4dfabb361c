"""The clients' link to node-2 is black-holed: data is swallowed both ways and the
connections stay open, so every request to node-2 hangs until the client gives up.
node-2 itself is fine (the monitor reaches it directly and it answers), and so are the
other nodes. The timeouts count as errors at the moment the client gave up on them, so
request_errors is detected at node-2 about one client timeout after the cut, and the
diagnosis names the cut link, client <-> node-2, not a crash or a pause of node-2."""

from __future__ import annotations

import pytest

from pytest_operator import blackhole, steady

pytestmark = pytest.mark.subject("ratelimiter")


@pytest.mark.chaos(blackhole("client", "node-2"))
async def test_blackholed_client_link_is_diagnosed_as_a_partition(operator, workload):
    await workload.start(steady(rate=90), keys=["k1", "k2"])
    run = await operator.monitor(until="request_errors", timeout=20, settle=1.0)
    run.assert_detected("request_errors", within=12.0, component="node-2")
    assert run.first("node_down", "node-2") is None, "node-2 answered the monitor throughout"
    for other in ("node-1", "node-3"):
        assert run.first("request_errors", other) is None, f"clients still reached {other}"
    await operator.assert_diagnosis(run)
