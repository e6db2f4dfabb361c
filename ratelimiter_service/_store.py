"""Redis access: one client, short timeouts, no retries but a stale connection's, a batcher.

Concurrent script calls are coalesced: calls made while a pipeline is in flight wait
for it and then go out together in the next pipeline (at most ``MAX_INFLIGHT``
pipelines at once, ``MAX_BATCH`` calls each), on one connection of their own
(``_pipe.PipeProtocol``: replies parsed by hiredis as they arrive, no per-call
coroutine or timer). Scripts run by EVALSHA; a NOSCRIPT answer (Redis restarted,
SCRIPT FLUSH) loads every script again and repeats the calls that failed. Any
connection error or timeout raises ``RedisUnavailable``; the next call opens a fresh
connection, so the node reconnects without a restart. Other commands go through
redis-py (``call``) with the same timeouts.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ._pipe import Address, PipeProtocol, RedisUnavailable, open_pipe, pack
from ._scripts import ALL_SCRIPTS, Script

MAX_BATCH = 256
MAX_INFLIGHT = 2

Arg = str | int | float | bytes
_T = TypeVar("_T")


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
            # One retry, on a connection error only: a pooled connection the server closed
            # (Redis restarted) fails its next command, and a fresh connection is the fix,
            # not a 503. A store that is really gone refuses the new connection at once,
            # and a timeout is never retried: a failure still shows without delay, and
            # the node's policy decides what then.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
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
        self._address = _address(self.client)
        self._pipe: PipeProtocol | None = None
        self._connecting: asyncio.Task[PipeProtocol] | None = None

    async def close(self) -> None:
        if self._pipe is not None:
            self._pipe.fail(RedisUnavailable("ConnectionError: the store was closed"))
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
            calls = [call for call, _ in batch]
            futures = [future for _, future in batch]
            self._inflight += 1
            pipe = self._pipe
            if pipe is not None and pipe.usable:
                self._send(pipe, calls, futures, retry=True)
            else:
                self._loop.create_task(self._connect_and_send(calls, futures, retry=True))

    def _send(
        self,
        pipe: PipeProtocol,
        calls: list[_Call],
        futures: list[asyncio.Future[object]],
        retry: bool,
    ) -> None:
        batch = _Batch(self, calls, futures, retry)
        pipe.send(_pack(calls), list(itertools.repeat(batch, len(calls))))

    async def _connected(self) -> PipeProtocol:
        pipe = self._pipe
        if pipe is not None and pipe.usable:
            return pipe
        if self._connecting is None or self._connecting.done():
            assert self._loop is not None
            self._connecting = self._loop.create_task(open_pipe(self._address, self.timeout_s))
        self._pipe = await self._connecting
        return self._pipe

    async def _connect_and_send(
        self, calls: list[_Call], futures: list[asyncio.Future[object]], retry: bool
    ) -> None:
        try:
            pipe = await self._connected()
        except RedisUnavailable as error:
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            self._batch_done(time.perf_counter(), failed=True)
            return
        self._send(pipe, calls, futures, retry)

    def _batch_done(self, started: float, failed: bool) -> None:
        if self._on_latency is not None:
            self._on_latency(time.perf_counter() - started)
        if failed and self._on_error is not None:
            self._on_error()
        self._inflight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _reload_and_repeat(self, calls: list[_Call], futures: list[asyncio.Future[object]]) -> None:
        """NOSCRIPT: load every script, then repeat those calls once (same connection, so
        Redis runs the loads first)."""
        assert self._loop is not None
        pipe = self._pipe
        self._inflight += 1
        if pipe is not None and pipe.usable:
            pipe.send(_LOAD_ALL, [_ignore] * len(ALL_SCRIPTS))
            self._send(pipe, calls, futures, retry=False)
        else:
            self._loop.create_task(self._connect_and_send(calls, futures, retry=False))


class _Batch:
    """The replies of one pipeline: the i-th reply settles the i-th call's future."""

    __slots__ = ("calls", "failed", "futures", "missing", "next", "retry", "started", "store")

    def __init__(
        self,
        store: RedisStore,
        calls: list[_Call],
        futures: list[asyncio.Future[object]],
        retry: bool,
    ) -> None:
        self.store = store
        self.calls = calls
        self.futures = futures
        self.retry = retry
        self.next = 0
        self.failed = False
        self.missing: list[int] = []
        self.started = time.perf_counter()

    def __call__(self, reply: object) -> None:
        index = self.next
        self.next = index + 1
        future = self.futures[index]
        if isinstance(reply, BaseException):
            if self.retry and isinstance(reply, NoScriptError):
                self.missing.append(index)
            elif not future.done():
                future.set_exception(reply)
            if isinstance(reply, RedisUnavailable):
                self.failed = True
        elif not future.done():
            future.set_result(reply)
        if self.next == len(self.futures):
            self.store._batch_done(self.started, self.failed)
            if self.missing:
                self.store._reload_and_repeat(
                    [self.calls[i] for i in self.missing], [self.futures[i] for i in self.missing]
                )


def _ignore(reply: object) -> None:
    """A reply nobody waits for (SCRIPT LOAD before repeated calls: a failed load shows
    as NOSCRIPT again on the repeated call)."""


def _bulk(value: Arg) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


_HEADS: dict[tuple[str, int, int], bytes] = {}


def _head(call: _Call) -> bytes:
    """``EVALSHA sha numkeys`` with the array length, made once per script and shape."""
    shape = (call.script.sha, len(call.keys), len(call.args))
    head = _HEADS.get(shape)
    if head is None:
        sha, keys, args = shape
        head = _HEADS[shape] = b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (
            3 + keys + args, _bulk(sha), _bulk(keys)
        )  # fmt: skip
    return head


def _pack(calls: Sequence[_Call]) -> bytes:
    """EVALSHA commands in the Redis protocol (RESP), all in one buffer."""
    out = []
    for call in calls:
        out.append(_head(call))
        out.extend(map(_bulk, call.keys))
        out.extend(map(_bulk, call.args))
    return b"".join(out)


_LOAD_ALL = b"".join(pack((b"SCRIPT", b"LOAD", script.source.encode())) for script in ALL_SCRIPTS)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _address(client: aioredis.Redis) -> Address:
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    return Address(
        host=kwargs.get("host", "localhost"),
        port=int(kwargs.get("port", 6379)),
        path=kwargs.get("path"),
        tls=issubclass(pool.connection_class, SSLConnection),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        db=int(kwargs.get("db", 0)),
    )


__all__ = ("RedisStore", "RedisUnavailable")
