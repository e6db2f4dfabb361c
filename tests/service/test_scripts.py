"""Each Lua script against its Python model, decision by decision, on a real Redis.

The scripts run with an explicit clock (the `--clock node` path), so the model sees the
same times as the script and every field of every decision must be equal.
"""

from __future__ import annotations

import random

import pytest
import redis

from ratelimiter_service._algorithms import Decision, decide, new_state
from ratelimiter_service._config import Algorithm, LimitSpec
from ratelimiter_service._scripts import CHECK_SCRIPTS, Keys
from tests.service.conftest import RedisServer

EPOCH_US = 1_790_000_000_123_456  # realistic magnitudes: precision matters at 1.7e15 us


def _run_script(
    client: redis.Redis, key: str, spec: LimitSpec, cost: int, now: int, n: int
) -> Decision:
    script = CHECK_SCRIPTS[spec.algorithm]
    keys = Keys("t").state(spec.algorithm, key)
    args: list[str | int] = [spec.limit, spec.window_ms, cost, now]
    if spec.algorithm is Algorithm.SLIDING_LOG:
        args.append(f"tok{n}")
    raw = client.evalsha(script.sha, len(keys), *keys, *args)
    allowed, count, remaining, retry, reset = raw
    return Decision(allowed == 1, count, remaining, retry, reset)


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
@pytest.mark.parametrize(("limit", "window_ms"), [(10, 1000), (3, 1000), (7, 333)])
def test_script_matches_model(
    redis_server: RedisServer, algorithm: Algorithm, limit: int, window_ms: int
) -> None:
    rng = random.Random(f"{algorithm.value}-{limit}-{window_ms}")
    spec = LimitSpec(limit, window_ms, algorithm)
    state = new_state(algorithm)
    with redis_server.client() as client:
        client.script_load(CHECK_SCRIPTS[algorithm].source)
        now = EPOCH_US
        allowed = denied = 0
        for n in range(1500):
            # bursts at one instant, short gaps, and now and then a long pause
            step = rng.choice(
                [
                    0,
                    0,
                    1,
                    rng.randrange(window_ms * 1000 // 20),
                    rng.randrange(window_ms * 1000 // 3),
                    window_ms * 2000,
                ]
            )
            now += step
            cost = rng.choice([1, 1, 1, 2, limit]) if rng.random() < 0.97 else 0
            expected = decide(state, spec, cost, now)
            got = _run_script(client, "k", spec, cost, now, n)
            assert got == expected, f"step {n} at {now} cost {cost}"
            allowed += expected.allowed
            denied += cost > 0 and not expected.allowed
    # the sequence exercised both outcomes
    assert allowed > 50
    assert denied > 50


def test_sliding_log_members_unique_within_one_microsecond(redis_server: RedisServer) -> None:
    spec = LimitSpec(100, 1000, Algorithm.SLIDING_LOG)
    with redis_server.client() as client:
        client.script_load(CHECK_SCRIPTS[Algorithm.SLIDING_LOG].source)
        decisions = [_run_script(client, "u", spec, 1, EPOCH_US, n) for n in range(60)]
        log_key = Keys("t").state(Algorithm.SLIDING_LOG, "u")[0]
        assert client.zcard(log_key) == 60
    assert [d.count for d in decisions] == list(range(1, 61))


def test_fixed_window_admits_twice_the_limit_across_an_edge(redis_server: RedisServer) -> None:
    spec = LimitSpec(10, 1000, Algorithm.FIXED_WINDOW)
    edge = (EPOCH_US // 1_000_000 + 1) * 1_000_000
    with redis_server.client() as client:
        client.script_load(CHECK_SCRIPTS[Algorithm.FIXED_WINDOW].source)
        before = [_run_script(client, "f", spec, 1, edge - 1000, n) for n in range(12)]
        after = [_run_script(client, "f", spec, 1, edge + 1000, n) for n in range(12)]
    # 20 admitted within 2 ms: twice the limit, as documented
    assert sum(d.allowed for d in before) == 10
    assert sum(d.allowed for d in after) == 10
    assert before[-1].retry_after_us == 1000
