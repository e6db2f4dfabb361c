"""The rate limiter's HTTP client against a stand-in node over real sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pytest_operator._history import Outcome
from subjects.ratelimiter.client import Decision, HttpError, RateLimiterClient
from tests.workload.standin import StandinNode


@pytest.mark.parametrize(
    ("key", "outcome", "detail"),
    [
        ("allow-1", Outcome.OK, None),
        ("block-1", Outcome.REJECTED, None),
        ("chunked", Outcome.OK, None),
        ("close", Outcome.OK, None),
        ("http10", Outcome.REJECTED, None),
        ("degraded", Outcome.OK, "mode=degraded"),
        ("boom", Outcome.ERROR, "HTTP 500 Internal Server Error: redis is down"),
        ("garbage", Outcome.ERROR, "reply is not JSON: b'not json!'"),
        ("noallowed", Outcome.ERROR, 'reply has no boolean "allowed": b\'{"limit":1}\''),
        ("drop", Outcome.ERROR, "transport: IncompleteReadError('0 bytes read on a total of"),
    ],
)
async def test_replies_map_to_outcomes(
    node: StandinNode, key: str, outcome: Outcome, detail: str | None
) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        response = await client("n1", key)
    finally:
        await client.aclose()
    assert response.outcome is outcome
    if detail is None:
        assert response.detail is None
    else:
        assert response.detail is not None and response.detail.startswith(detail)


async def test_the_request_on_the_wire(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url + "/"}, timeout=5.0)
    try:
        await client("n1", 'a "quoted" key')
    finally:
        await client.aclose()
    assert node.requests == [
        ("POST", "/check", f"127.0.0.1:{node.port}", {"key": 'a "quoted" key', "cost": 1})
    ]


async def test_connections_are_kept_alive_and_replaced_when_closed(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        for _ in range(20):
            assert (await client("n1", "allow")).outcome is Outcome.OK
        assert node.connections == 1
        assert (await client("n1", "close")).outcome is Outcome.OK
        assert (await client("n1", "chunked")).outcome is Outcome.OK
        assert (await client("n1", "allow")).outcome is Outcome.OK
        assert node.connections == 2
    finally:
        await client.aclose()


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_new_one(
    node: StandinNode,
) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        # The node answers with keep-alive headers, then closes: the pooled connection is stale.
        assert (await client("n1", "silent-close")).outcome is Outcome.OK
        await asyncio.sleep(0.05)
        assert (await client("n1", "allow")).outcome is Outcome.OK
    finally:
        await client.aclose()
    assert [r[3]["key"] for r in node.requests] == ["silent-close", "allow"]
    assert node.connections == 2


async def test_concurrent_checks_open_connections_in_parallel(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        responses = await asyncio.gather(*(client("n1", "slow:0.2") for _ in range(10)))
    finally:
        await client.aclose()
    assert {r.outcome for r in responses} == {Outcome.OK}
    assert node.max_concurrent == 10


async def test_a_slow_node_times_out(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=0.2)
    try:
        response = await client("n1", "slow:2")
    finally:
        await client.aclose()
    assert response.outcome is Outcome.TIMEOUT
    assert response.detail == "no reply within 0.2 s"


async def test_a_refused_connection_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        client = RateLimiterClient({"n1": f"http://127.0.0.1:{port}"}, timeout=2.0)
        try:
            response = await client("n1", "allow")
        finally:
            await client.aclose()
    assert response.outcome is Outcome.ERROR
    assert response.detail is not None
    assert response.detail.startswith("transport: ConnectionRefusedError(")


async def test_check_returns_the_full_decision(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        decision = await client.check("n1", "block-2", cost=2)
        with pytest.raises(HttpError, match=r"^HTTP 500 Internal Server Error: b'redis is down'$"):
            await client.check("n1", "boom")
    finally:
        await client.aclose()
    assert decision == Decision(
        allowed=False, limit=10, remaining=0, retry_after_ms=250, node="standin", mode="normal"
    )
    assert node.requests[0][3] == {"key": "block-2", "cost": 2}


async def test_bad_configuration_and_targets_are_named(node: StandinNode) -> None:
    with pytest.raises(ValueError) as info:
        RateLimiterClient({"n1": "https://127.0.0.1:1"})
    assert str(info.value) == (
        "a node URL must be http://HOST:PORT[/PREFIX], got 'https://127.0.0.1:1'"
    )
    with pytest.raises(ValueError, match=r"^RateLimiterClient needs at least one node URL$"):
        RateLimiterClient({})
    client = RateLimiterClient({"n1": node.url, "n2": node.url})
    try:
        with pytest.raises(ValueError, match=r"^unknown target 'n9' \(known: n1, n2\)$"):
            await client("n9", "allow")
    finally:
        await client.aclose()
