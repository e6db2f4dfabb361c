"""Redis failure policies: with Redis killed or frozen each policy does what it says, and the
node comes back to normal by itself when Redis returns."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.service.conftest import Node, RedisServer, StartNode

LIMIT = 3


async def _until(what: str, probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> float:
    """Seconds until probe() holds; fails the test after timeout."""
    started = time.monotonic()
    while not await probe():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _ready_is(http: httpx.AsyncClient, node: Node, status: int) -> bool:
    return (await http.get(f"{node.url}/readyz")).status_code == status


def _start(start_node: StartNode, redis_server: RedisServer, policy: str) -> Node:
    return start_node(
        f"fail-{policy}",
        redis_server.url,
        policy=policy,
        default_limit=LIMIT,
        default_window_ms=60_000,
        redis_timeout_ms=100,
        heartbeat_ms=100,
    )


async def _checks(http: httpx.AsyncClient, node: Node, key: str, n: int) -> list[dict[str, object]]:
    return [(await http.post(f"{node.url}/check", json={"key": key})).json() for _ in range(n)]


EXPECTED_ALLOWED = {
    "fail_open": [True] * 5,
    "fail_closed": [False] * 5,
    "local": [True] * LIMIT + [False] * (5 - LIMIT),
}


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed", "local"])
async def test_policy_while_redis_is_down_and_recovery(
    policy: str, redis_server: RedisServer, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = _start(start_node, redis_server, policy)
    normal = await _checks(http, node, "before", 1)
    assert normal[0]["mode"] == "normal"

    redis_server.kill()
    await _until("readyz 503 after redis was killed", lambda: _ready_is(http, node, 503))
    ready = (await http.get(f"{node.url}/readyz")).json()
    assert ready["ready"] is False
    assert ready["redis"] == "down"
    assert ready["mode"] == "degraded"
    assert ready["error"]

    answers = await _checks(http, node, "during", 5)
    assert [a["mode"] for a in answers] == ["degraded"] * 5
    assert [a["allowed"] for a in answers] == EXPECTED_ALLOWED[policy]
    if policy == "fail_closed":
        assert all(int(str(a["retry_after_ms"])) > 0 for a in answers)
    counters = (await http.get(f"{node.url}/api/counters")).json()
    assert counters["mode"] == "degraded"
    (during,) = [c for c in counters["counters"] if c["key"] == "during"]
    if policy == "local":
        assert (during["source"], during["count"], during["remaining"]) == ("local", LIMIT, 0)
    else:
        assert (during["source"], during["count"]) == ("unavailable", None)
    metrics = (await http.get(f"{node.url}/metrics")).text
    assert f'ratelimiter_degraded{{node="{node.node_id}"}} 1.0' in metrics
    assert f'ratelimiter_redis_up{{node="{node.node_id}"}} 0.0' in metrics
    mutation = await http.put(f"{node.url}/api/limits/x", json={"limit": 1, "window_ms": 10})
    assert mutation.status_code == 503

    redis_server.start()  # same port, empty: no data, no scripts
    await _until("readyz 200 after redis came back", lambda: _ready_is(http, node, 200))
    after = await _checks(http, node, "after", 1)
    assert after[0]["mode"] == "normal"
    assert after[0]["allowed"] is True
    assert after[0]["remaining"] == LIMIT - 1


async def test_frozen_redis_degrades_quickly_and_thaws(
    redis_server: RedisServer, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = _start(start_node, redis_server, "local")
    assert (await _checks(http, node, "k", 1))[0]["mode"] == "normal"
    redis_server.pause()
    try:
        detected = await _until("readyz 503 after redis froze", lambda: _ready_is(http, node, 503))
        # short timeouts, no retries: a hang shows within a fraction of a second (generous
        # bound for a loaded machine; redis-py's defaults would take 5 s and more)
        assert detected < 3.0
        started = time.monotonic()
        answers = await _checks(http, node, "k", 5)
        elapsed = time.monotonic() - started
        # decided without waiting on Redis: far below redis-py's default 5 s timeouts
        assert elapsed < 2.0
        assert [a["mode"] for a in answers] == ["degraded"] * 5
        assert [a["allowed"] for a in answers] == EXPECTED_ALLOWED["local"]
    finally:
        redis_server.resume()
    await _until("readyz 200 after redis thawed", lambda: _ready_is(http, node, 200))
    after = await _checks(http, node, "k", 1)
    assert after[0]["mode"] == "normal"
    # Redis kept its data: the one request admitted before the freeze still counts
    assert after[0]["remaining"] == LIMIT - 2


async def test_crashed_node_shows_down_in_registry(
    redis_server: RedisServer, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    one = start_node("reg-1", redis_server.url, heartbeat_ms=100)
    two = start_node("reg-2", redis_server.url, heartbeat_ms=100)

    async def states() -> dict[str, str]:
        nodes = (await http.get(f"{one.url}/api/nodes")).json()["nodes"]
        return {n["id"]: n["state"] for n in nodes}

    assert await states() == {"reg-1": "Up", "reg-2": "Up"}
    two.stop(signal.SIGKILL)

    async def two_down() -> bool:
        return await states() == {"reg-1": "Up", "reg-2": "Down"}

    await _until("reg-2 Down after SIGKILL", two_down)


async def test_management_works_at_once_after_redis_restarts(
    redis_server: RedisServer, start_node: StartNode, http: httpx.AsyncClient
) -> None:
    """Redis restarted under a node whose connection pool holds connections Redis closed:
    once the node says it is ready again, its management calls succeed the first time
    (a stale pooled connection is retried once on a fresh one, not answered with 503)."""
    node = _start(start_node, redis_server, "fail_open")
    body = {"limit": 5, "window_ms": 1000}
    # several calls at once, so the pool holds several connections
    puts = await asyncio.gather(
        *(http.put(f"{node.url}/api/limits/k{i}", json=body) for i in range(6))
    )
    assert [r.status_code for r in puts] == [200] * 6
    for attempt in range(3):
        redis_server.kill()
        redis_server.start()
        await _until("ready again", lambda: _ready_is(http, node, 200))
        answers = await asyncio.gather(
            *(http.put(f"{node.url}/api/limits/k{i}", json=body) for i in range(6))
        )
        assert [r.status_code for r in answers] == [200] * 6, (attempt, [r.text for r in answers])
