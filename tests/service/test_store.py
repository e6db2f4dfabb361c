"""The store's pipelined connection on a real Redis: URL credentials and db, a refused
password, many concurrent calls coalesced in order, and a fresh connection after a drop
(to a Redis that has lost the scripts)."""

from __future__ import annotations

import asyncio

import pytest
import redis

from ratelimiter_service._config import Algorithm
from ratelimiter_service._scripts import CHECK_SCRIPTS, Keys
from ratelimiter_service._store import RedisStore, RedisUnavailable
from tests.service.conftest import RedisServer

SCRIPT = CHECK_SCRIPTS[Algorithm.FIXED_WINDOW]
KEYS = Keys("t")


def _check(store: RedisStore, key: str, limit: int = 5) -> asyncio.Future[object]:
    keys = KEYS.state(Algorithm.FIXED_WINDOW, key)
    return asyncio.ensure_future(store.evalsha(SCRIPT, keys, [limit, 60_000, 1, ""]))


async def test_password_and_db_come_from_the_url(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.config_set("requirepass", "pw")
    store = RedisStore(f"redis://:pw@127.0.0.1:{redis_server.port}/3", 2.0)
    try:
        await store.load_scripts()
        reply = await _check(store, "k")
        assert reply == [1, 1, 4, 0, reply[4]]  # type: ignore[index]
    finally:
        await store.close()
    with redis.Redis(port=redis_server.port, password="pw", db=3, socket_timeout=2) as client:
        assert client.exists("t:{k}:fw") == 1
        client.select(0)
        assert client.dbsize() == 0


async def test_refused_password_is_unavailable(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.config_set("requirepass", "pw")
    store = RedisStore(f"redis://:wrong@127.0.0.1:{redis_server.port}/0", 2.0)
    try:
        with pytest.raises(RedisUnavailable, match="WRONGPASS"):
            await _check(store, "k")
    finally:
        await store.close()


async def test_concurrent_calls_each_get_their_own_reply(redis_server: RedisServer) -> None:
    store = RedisStore(f"redis://127.0.0.1:{redis_server.port}/0", 2.0)
    try:
        await store.load_scripts()
        # 3 keys, 600 calls at once: more than two pipelines of MAX_BATCH
        replies = await asyncio.gather(*(_check(store, f"k{i % 3}", 150) for i in range(600)))
        counts = {f"k{i}": sorted(r[1] for r in replies[i::3]) for i in range(3)}  # type: ignore[index]
        assert counts == {key: list(range(1, 151)) + [150] * 50 for key in counts}
        assert [r[0] for r in replies].count(1) == 450  # type: ignore[index]
    finally:
        await store.close()


async def test_a_dropped_connection_fails_then_reconnects(redis_server: RedisServer) -> None:
    store = RedisStore(f"redis://127.0.0.1:{redis_server.port}/0", 2.0)
    try:
        await store.load_scripts()
        assert (await _check(store, "k"))[0] == 1  # type: ignore[index]
        redis_server.kill()
        with pytest.raises(RedisUnavailable):
            await _check(store, "k")
        redis_server.start()  # a new Redis without the scripts: NOSCRIPT, loaded, repeated
        assert (await _check(store, "k"))[0] == 1  # type: ignore[index]
    finally:
        await store.close()
