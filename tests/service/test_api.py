"""Every endpoint of a real node process, its authorization and its answers to bad input."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import httpx
import pytest

from tests.service.conftest import Node, RedisServer, StartNode

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def node(module_redis: RedisServer, module_start_node: StartNode) -> Node:
    return module_start_node(
        "api-1", module_redis.url, token=TOKEN, default_limit=5, default_window_ms=60000
    )


async def test_check_answers_and_headers(node: Node, http: httpx.AsyncClient) -> None:
    answers = [await http.post(f"{node.url}/check", json={"key": "k", "cost": 2}) for _ in range(3)]
    bodies = [a.json() for a in answers]
    assert [b["allowed"] for b in bodies] == [True, True, False]
    assert [b["remaining"] for b in bodies] == [3, 1, 1]
    assert all(b["limit"] == 5 and b["node"] == "api-1" and b["mode"] == "normal" for b in bodies)
    assert bodies[0]["retry_after_ms"] == 0
    assert 0 < bodies[2]["retry_after_ms"] <= 60000
    assert answers[0].headers["RateLimit-Limit"] == "5"
    assert answers[1].headers["RateLimit-Remaining"] == "1"
    assert 0 < int(answers[2].headers["RateLimit-Reset"]) <= 60
    assert "Retry-After" in answers[2].headers
    default_cost = await http.post(f"{node.url}/check", json={"key": "k"})
    assert default_cost.json()["allowed"] is True
    assert default_cost.json()["remaining"] == 0


async def test_health_and_readiness(node: Node, http: httpx.AsyncClient) -> None:
    health = (await http.get(f"{node.url}/healthz")).json()
    assert health["status"] == "ok"
    assert health["node"] == "api-1"
    assert abs(health["now_ms"] - time.time() * 1000) < 5000
    assert health["started_at"] <= time.time()
    assert health["uptime_s"] > 0
    changed = health["config_changed_at"]
    assert changed is None or health["started_at"] <= changed <= time.time()
    ready = await http.get(f"{node.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "redis": "up", "mode": "normal", "node": "api-1"}


async def test_limits_crud_and_auth(node: Node, http: httpx.AsyncClient) -> None:
    url = f"{node.url}/api/limits/orders/eu"  # a key with a slash
    body = {"limit": 2, "window_ms": 1000, "algorithm": "gcra"}
    assert (await http.put(url, json=body)).status_code == 401
    wrong = await http.put(url, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.json() == {"error": "wrong bearer token"}
    put = await http.put(url, json=body, headers=AUTH)
    assert put.status_code == 200
    got = (await http.get(url)).json()
    assert got == {
        "key": "orders/eu",
        "limit": 2,
        "window_ms": 1000,
        "algorithm": "gcra",
        "configured": True,
    }
    checks = [
        (await http.post(f"{node.url}/check", json={"key": "orders/eu"})).json() for _ in range(3)
    ]
    assert [c["allowed"] for c in checks] == [True, True, False]
    assert checks[0]["algorithm"] == "gcra"
    assert (await http.delete(url)).status_code == 401
    assert (await http.delete(url, headers=AUTH)).status_code == 200
    gone = await http.delete(url, headers=AUTH)
    assert gone.status_code == 404
    message = 'no limit configured for key "orders/eu": it has the default, 5 per 60000 ms'
    assert gone.json() == {"error": message + " by sliding_log"}
    unconfigured = await http.get(url)
    assert unconfigured.status_code == 404
    assert unconfigured.json() == gone.json()


async def test_limit_set_on_one_node_is_seen_by_another(
    module_redis: RedisServer, start_node: StartNode, node: Node, http: httpx.AsyncClient
) -> None:
    other = start_node("api-2", module_redis.url, token=TOKEN)
    body = {"limit": 7, "window_ms": 5000, "algorithm": "fixed_window"}
    before = time.time()
    assert (await http.put(f"{node.url}/api/limits/shared", json=body, headers=AUTH)).is_success
    put_at = time.monotonic()
    while True:
        seen = (await http.post(f"{other.url}/check", json={"key": "shared"})).json()
        if seen["limit"] == 7:
            break
        assert time.monotonic() - put_at < 5, "the other node never saw the new limit"
        await asyncio.sleep(0.02)
    assert seen["algorithm"] == "fixed_window"
    # both nodes report when their limits changed: the one written to and the one that read it
    changed = [
        (await http.get(f"{n.url}/healthz")).json()["config_changed_at"] for n in (node, other)
    ]
    assert all(c is not None and before <= c <= time.time() for c in changed), changed
    # the same limit written again changes nothing
    assert (await http.put(f"{node.url}/api/limits/shared", json=body, headers=AUTH)).is_success
    assert (await http.get(f"{node.url}/healthz")).json()["config_changed_at"] == changed[0]


async def test_counters_reset_and_blocks(node: Node, http: httpx.AsyncClient) -> None:
    for _ in range(7):
        await http.post(f"{node.url}/check", json={"key": "c1"})
    counters = (await http.get(f"{node.url}/api/counters")).json()
    assert counters["node"] == "api-1"
    assert counters["mode"] == "normal"
    (c1,) = [c for c in counters["counters"] if c["key"] == "c1"]
    assert c1 == {
        "key": "c1",
        "count": 5,
        "limit": 5,
        "remaining": 0,
        "window_ms": 60000,
        "algorithm": "sliding_log",
        "source": "redis",
        "configured": False,
    }
    blocks = (await http.get(f"{node.url}/api/blocks")).json()["blocks"]
    c1_blocks = [b for b in blocks if b["key"] == "c1"]
    assert len(c1_blocks) == 2
    assert c1_blocks[0]["limit"] == 5
    assert c1_blocks[0]["mode"] == "normal"
    reset_url = f"{node.url}/api/counters/c1/reset"
    assert (await http.post(reset_url)).status_code == 401
    assert (await http.post(reset_url, headers={"Authorization": "Basic x"})).status_code == 401
    assert (await http.post(reset_url, headers=AUTH)).json()["reset"] is True
    after = (await http.post(f"{node.url}/check", json={"key": "c1"})).json()
    assert after["allowed"] is True
    assert after["remaining"] == 4


async def test_nodes_registry(node: Node, http: httpx.AsyncClient) -> None:
    nodes = (await http.get(f"{node.url}/api/nodes")).json()["nodes"]
    (me,) = [n for n in nodes if n["id"] == "api-1"]
    assert me["id"] == "api-1"
    assert me["address"] == node.url
    assert me["state"] == "Up"
    assert me["mode"] == "normal"


def _sample(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])


ALLOWED = 'ratelimiter_requests_total{decision="allowed",mode="normal",node="api-1"}'
DENIED = 'ratelimiter_requests_total{decision="denied",mode="normal",node="api-1"}'
CHECKS = 'ratelimiter_check_latency_seconds_count{node="api-1"}'


async def test_metrics(node: Node, http: httpx.AsyncClient) -> None:
    await http.post(f"{node.url}/check", json={"key": "m-warm"})
    before = (await http.get(f"{node.url}/metrics")).text
    for _ in range(7):
        await http.post(f"{node.url}/check", json={"key": "m"})
    text = (await http.get(f"{node.url}/metrics")).text
    assert _sample(text, ALLOWED) - _sample(before, ALLOWED) == 5
    assert _sample(text, DENIED) - _sample(before, DENIED) == 2
    assert _sample(text, CHECKS) - _sample(before, CHECKS) == 7
    for name in (
        "ratelimiter_redis_up{",
        "ratelimiter_degraded{",
        "ratelimiter_redis_errors_total",
        "ratelimiter_redis_latency_seconds_bucket",
        "ratelimiter_active_counters",
        "ratelimiter_limit_updates_total",
        "ratelimiter_counter_resets_total",
    ):
        assert name in text
    assert 'ratelimiter_redis_up{node="api-1"} 1.0' in text


CONTROLS = "key must not contain control characters (U+0000-U+001F, U+007F-U+009F) or surrogates"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "body must be a JSON object"),
        (b"[1]", "body must be a JSON object"),
        (b"{}", "key must be a string"),
        (b'{"key": ""}', "key must be 1 to 256 characters long, got 0"),
        (b'{"key": "' + b"x" * 257 + b'"}', "key must be 1 to 256 characters long, got 257"),
        (b'{"key": "a\\u0007b"}', CONTROLS),
        (b'{"key": "a\\u0085b"}', CONTROLS),
        (b'{"key": "\\ud800"}', CONTROLS),
        (b'{"key": "k", "cost": 0}', "cost must be between 1 and 1000000000, got 0"),
        (
            b'{"key": "k", "cost": 1000000001}',
            "cost must be between 1 and 1000000000, got 1000000001",
        ),
        (b'{"key": "k", "cost": "1"}', 'cost must be an integer, got "1"'),
        (b'{"key": "k", "costs": 1}', 'unknown field "costs" (valid: key, cost)'),
        (b'{"key": "k", "cost": true}', "cost must be an integer, got true"),
        (b'{"key": "k", "cost": 1.5}', "cost must be an integer, got 1.5"),
    ],
)
async def test_check_rejects_bad_input(
    node: Node, http: httpx.AsyncClient, body: bytes, error: str
) -> None:
    answer = await http.post(f"{node.url}/check", content=body)
    assert answer.status_code == 422
    assert answer.json() == {"error": error}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"limit": 0, "window_ms": 10}, "limit must be between 1 and 1000000000, got 0"),
        (
            {"limit": 10**9 + 1, "window_ms": 10},
            "limit must be between 1 and 1000000000, got 1000000001",
        ),
        ({"limit": 5, "window_ms": 0}, "window_ms must be between 1 and 86400000, got 0"),
        (
            {"limit": 5, "window_ms": 86_400_001},
            "window_ms must be between 1 and 86400000, got 86400001",
        ),
        ({"limit": 5}, "window_ms is required"),
        (
            {"limit": 5, "window_ms": 10, "algorithm": "leaky"},
            'algorithm must be one of sliding_log, sliding_window, fixed_window, gcra, got "leaky"',
        ),
    ],
)
async def test_put_limit_rejects_bad_input(
    node: Node, http: httpx.AsyncClient, body: dict[str, object], error: str
) -> None:
    answer = await http.put(f"{node.url}/api/limits/k", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json() == {"error": error}


async def test_oversized_bodies_and_keys(node: Node, http: httpx.AsyncClient) -> None:
    big = b'{"key": "k", "pad": "' + b"x" * 5000 + b'"}'
    for method, path in (("POST", "/check"), ("PUT", "/api/limits/k")):
        answer = await http.request(method, f"{node.url}{path}", content=big, headers=AUTH)
        assert answer.status_code == 422
        assert answer.json() == {"error": "body too large: more than 4096 bytes"}
    long_key = await http.get(f"{node.url}/api/limits/{'y' * 300}")
    assert long_key.status_code == 422
    assert long_key.json() == {"error": "key must be 1 to 256 characters long, got 300"}
    bad_blocks = await http.get(f"{node.url}/api/blocks?limit=0")
    assert bad_blocks.status_code == 422
    not_int = await http.get(f"{node.url}/api/blocks?limit=x")
    assert not_int.status_code == 422


async def test_scripts_flushed_from_redis_are_loaded_again(
    redis_server: RedisServer, node: Node, http: httpx.AsyncClient
) -> None:
    first = (await http.post(f"{node.url}/check", json={"key": "ns"})).json()
    with redis_server.client() as client:
        client.script_flush()
    second = (await http.post(f"{node.url}/check", json={"key": "ns"})).json()
    assert first["mode"] == second["mode"] == "normal"
    assert (first["remaining"], second["remaining"]) == (4, 3)


async def test_cost_over_the_keys_limit_is_a_conflict(node: Node, http: httpx.AsyncClient) -> None:
    """The schema bounds cost by the largest limit; the key's own limit is its state: 409."""
    answer = await http.post(f"{node.url}/check", json={"key": "big", "cost": 6})
    assert answer.status_code == 409
    assert answer.json() == {"error": 'cost 6 is more than the limit 5 of key "big"'}


async def test_integral_numbers_are_integers(node: Node, http: httpx.AsyncClient) -> None:
    """JSON has one number type; 2.0 is the integer 2 (as JSON Schema says)."""
    check = await http.post(f"{node.url}/check", content=b'{"key": "float", "cost": 2.0}')
    assert check.status_code == 200
    assert check.json()["remaining"] == 3
    body = {"limit": 3.0, "window_ms": 1000.0}
    put = await http.put(f"{node.url}/api/limits/float-limit", json=body, headers=AUTH)
    assert put.status_code == 200
    assert (put.json()["limit"], put.json()["window_ms"]) == (3, 1000)


async def test_unknown_fields_are_rejected(node: Node, http: httpx.AsyncClient) -> None:
    body = {"limit": 3, "window": 1000, "window_ms": 1000}
    answer = await http.put(f"{node.url}/api/limits/typo", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json() == {"error": 'unknown field "window" (valid: limit, window_ms, algorithm)'}


@pytest.mark.parametrize("key", ["\u200b", "用户/42", "a b", "é" * 256, "😀"])
async def test_keys_of_any_non_control_characters(
    node: Node, http: httpx.AsyncClient, key: str
) -> None:
    check = await http.post(f"{node.url}/check", json={"key": key})
    assert check.status_code == 200, check.text
    quoted = quote(key, safe="")
    assert (await http.get(f"{node.url}/api/limits/{quoted}")).status_code == 404


@pytest.mark.parametrize("key", ["a%0Ab", "%7F", "%C2%9F", "a%00"])
async def test_control_characters_in_a_path_key_are_bad_input(
    node: Node, http: httpx.AsyncClient, key: str
) -> None:
    answer = await http.get(f"{node.url}/api/limits/{key}")
    assert answer.status_code == 422
    assert answer.json() == {"error": CONTROLS}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/api/limits/k", "DELETE, GET, PUT"),
        ("POST", "/api/limits/a/b", "DELETE, GET, PUT"),
        ("GET", "/check", "POST"),
        ("DELETE", "/healthz", "GET"),
        ("GET", "/api/counters/k/reset", "POST"),
    ],
)
async def test_405_names_every_method_of_the_path(
    node: Node, http: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    answer = await http.request(method, f"{node.url}{path}", headers=AUTH)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert answer.json() == {"error": f"method {method} not allowed on {path} (allowed: {allow})"}


async def test_unknown_path_is_a_404_error_object(node: Node, http: httpx.AsyncClient) -> None:
    answer = await http.get(f"{node.url}/nope")
    assert answer.status_code == 404
    assert answer.json() == {"error": "Not Found"}
