"""Redis access: one client, short timeouts, no retries, and a batcher.

Concurrent script calls are coalesced: calls made while a pipeline is in flight wait
for it and then go out together in the next pipeline (at most ``MAX_INFLIGHT``
pipelines at once, ``MAX_BATCH`` calls each). Scripts run by EVALSHA; a NOSCRIPT
answer (Redis restarted, SCRIPT FLUSH) loads every script again and repeats the calls
that failed. Any connection error or timeout raises ``RedisUnavailable``; the next
call opens a fresh connection, so the node reconnects without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ._scripts import ALL_SCRIPTS, Script

MAX_BATCH = 256
MAX_INFLIGHT = 2

Arg = str | int | float | bytes
_T = TypeVar("_T")


class RedisUnavailable(Exception):
    """Redis could not be reached in time (refused, timed out, connection lost)."""


@dataclass(frozen=True, slots=True)
class _Call:
    script: Script
    keys: Sequence[str]
    args: Sequence[Arg]


class RedisStore:
    def __init__(
        self,
        url: str,
        timeout_s: float,
        on_latency: Callable[[float], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # no retries: a failure must show at once, the node's policy decides what then
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
            decode_responses=False,
        )
        self._on_latency = on_latency
        self._on_error = on_error
        self._pending: list[tuple[_Call, asyncio.Future[object]]] = []
        self._inflight = 0
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        await self.client.aclose()

    # -- single commands -----------------------------------------------------------------

    async def call(self, make: Callable[[aioredis.Redis], Awaitable[_T]]) -> _T:
        """Run one client call with the store's deadline; errors become RedisUnavailable."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s * 3):
                result = await make(self.client)
        except (RedisError, OSError, TimeoutError) as error:
            if isinstance(error, ResponseError):
                raise
            if self._on_error is not None:
                self._on_error()
            raise RedisUnavailable(_describe(error)) from error
        finally:
            if self._on_latency is not None:
                self._on_latency(time.perf_counter() - started)
        return result

    async def load_scripts(self) -> None:
        async def load(client: aioredis.Redis) -> None:
            pipe = client.pipeline(transaction=False)
            for script in ALL_SCRIPTS:
                pipe.script_load(script.source)
            await pipe.execute()

        await self.call(load)

    # -- batched scripts -----------------------------------------------------------------

    def evalsha(
        self, script: Script, keys: Sequence[str], args: Sequence[Arg]
    ) -> Awaitable[object]:
        """Queue one script call for the next pipeline; await the result."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._pending.append((_Call(script, keys, args), future))
        if not self._scheduled and self._inflight < MAX_INFLIGHT:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        assert self._loop is not None
        while self._pending and self._inflight < MAX_INFLIGHT:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            self._inflight += 1
            self._loop.create_task(self._run(batch))

    async def _run(self, batch: list[tuple[_Call, asyncio.Future[object]]]) -> None:
        try:
            results = await self.call(lambda client: self._execute(client, batch))
        except Exception as error:
            failure = error if isinstance(error, RedisUnavailable) else RedisUnavailable(str(error))
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._inflight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                assert self._loop is not None
                self._loop.call_soon(self._flush)

    async def _execute(
        self, client: aioredis.Redis, batch: list[tuple[_Call, asyncio.Future[object]]]
    ) -> list[object]:
        calls = [call for call, future in batch]
        results = await _pipeline(client, calls)
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            pipe = client.pipeline(transaction=False)
            for script in ALL_SCRIPTS:
                pipe.script_load(script.source)
            await pipe.execute()
            again = await _pipeline(client, [calls[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        for result in results:
            if isinstance(result, (ConnectionError, TimeoutError, OSError, RedisError)) and not (
                isinstance(result, ResponseError)
            ):
                raise result
        return results


async def _pipeline(client: aioredis.Redis, calls: Sequence[_Call]) -> list[object]:
    """Send the calls in one write and read their replies, straight on one pooled connection.

    (redis-py's Pipeline does the same with more bookkeeping per command; this is the
    hot path of every decision.) A reply that is an error is returned, not raised.
    """
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py: untyped
    try:
        await connection.send_packed_command(_pack(calls), check_health=False)
        results: list[object] = []
        for _ in calls:
            try:
                results.append(await connection.read_response())
            except ResponseError as error:
                results.append(error)
        return results
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)


def _bulk(value: Arg) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _pack(calls: Sequence[_Call]) -> bytes:
    """EVALSHA commands in the Redis protocol (RESP), all in one buffer."""
    out = bytearray()
    for call in calls:
        out += b"*%d\r\n$7\r\nEVALSHA\r\n" % (3 + len(call.keys) + len(call.args))
        out += _bulk(call.script.sha)
        out += _bulk(len(call.keys))
        for key in call.keys:
            out += _bulk(key)
        for arg in call.args:
            out += _bulk(arg)
    return bytes(out)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"
