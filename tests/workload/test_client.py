"""The rate limiter's HTTP client against a stand-in node over real sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pytest_operator._history import Outcome
from pytest_operator._workload import Call
from subjects.ratelimiter.client import Decision, HttpError, RateLimiterClient, parse_reply
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
        (
            "drop",
            Outcome.ERROR,
            "transport: ClosedBeforeReply('the node closed the connection before any reply')",
        ),
    ],
)
async def test_replies_map_to_outcomes(
    node: StandinNode, key: str, outcome: Outcome, detail: str | None
) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        response = await client("n1", Call(key))
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
        await client("n1", Call('a "quoted" key'))
    finally:
        await client.aclose()
    assert node.requests == [
        ("POST", "/check", f"127.0.0.1:{node.port}", {"key": 'a "quoted" key', "cost": 1})
    ]


async def test_connections_are_kept_alive_and_replaced_when_closed(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        for _ in range(20):
            assert (await client("n1", Call("allow"))).outcome is Outcome.OK
        assert node.connections == 1
        assert (await client("n1", Call("close"))).outcome is Outcome.OK
        assert (await client("n1", Call("chunked"))).outcome is Outcome.OK
        assert (await client("n1", Call("allow"))).outcome is Outcome.OK
        assert node.connections == 2
    finally:
        await client.aclose()


async def test_a_stale_keep_alive_connection_is_retried_once_on_a_new_one(
    node: StandinNode,
) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        # The node answers with keep-alive headers, then closes: the pooled connection is stale.
        assert (await client("n1", Call("silent-close"))).outcome is Outcome.OK
        await asyncio.sleep(0.05)
        assert (await client("n1", Call("allow"))).outcome is Outcome.OK
    finally:
        await client.aclose()
    assert [r[3]["key"] for r in node.requests] == ["silent-close", "allow"]
    assert node.connections == 2


async def test_concurrent_checks_open_connections_in_parallel(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=5.0)
    try:
        responses = await asyncio.gather(*(client("n1", Call("slow:0.2")) for _ in range(10)))
    finally:
        await client.aclose()
    assert {r.outcome for r in responses} == {Outcome.OK}
    assert node.max_concurrent == 10


async def test_a_slow_node_times_out(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url}, timeout=0.2)
    try:
        response = await client("n1", Call("slow:2"))
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
            response = await client("n1", Call("allow"))
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
            await client("n9", Call("allow"))
    finally:
        await client.aclose()


def test_parse_reply_waits_for_every_byte_then_consumes_exactly_one_reply() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + b"HTTP/1.1 204 No"
    for cut in range(len(reply) - 15):
        assert parse_reply(reply[:cut], eof=False) is None
    parsed = parse_reply(reply, eof=False)
    assert parsed is not None
    first, used = parsed
    assert (first.status, first.reason, first.body, first.keep_alive, used) == (
        200,
        "OK",
        b"hello",
        True,
        len(reply) - 15,
    )


def test_parse_reply_chunked_with_extensions_and_trailers() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n"
    assert parse_reply(chunked, eof=False) is None
    full = chunked + b"0\r\nX-T: 1\r\n\r\n"
    parsed = parse_reply(full, eof=False)
    assert parsed is not None and parsed[0].body == b"abcde" and parsed[1] == len(full)
    with pytest.raises(HttpError, match=r"^connection closed inside a chunked body$"):
        parse_reply(chunked, eof=True)


def test_parse_reply_framed_by_the_end_of_the_connection() -> None:
    data = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nbody, then EOF"
    assert parse_reply(data, eof=False) is None
    parsed = parse_reply(data, eof=True)
    assert parsed is not None
    assert (parsed[0].body, parsed[0].keep_alive) == (b"body, then EOF", False)


@pytest.mark.parametrize(
    ("data", "eof", "message"),
    [
        (b"SMTP 220 hi\r\n\r\n", False, "bad status line b'SMTP 220 hi'"),
        (b"HTTP/1.1 abc OK\r\n\r\n", False, "bad status line b'HTTP/1.1 abc OK'"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", False, "bad header line b'no colon'"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", False, "bad Content-Length b'x'"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
            True,
            "connection closed after 3 of 9 body bytes",
        ),
        (b"HTTP/1.1 200 O", True, "connection closed inside the reply head: b'HTTP/1.1 200 O'"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            False,
            "bad chunk size b'zz'",
        ),
    ],
)
def test_parse_reply_refuses_malformed_replies(data: bytes, eof: bool, message: str) -> None:
    with pytest.raises(HttpError) as info:
        parse_reply(data, eof=eof)
    assert str(info.value) == message
