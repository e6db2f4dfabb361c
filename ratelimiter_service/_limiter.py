"""The node's rate limiter: decisions, limits, mode (normal/degraded) and background loops."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from ._algorithms import Decision, LocalLimiter
from ._config import Algorithm, ClockSource, Config, LimitSpec, Mode, Policy
from ._metrics import Metrics
from ._registry import NodeEntry, NodeView, list_nodes
from ._scripts import CHECK_SCRIPTS, HEARTBEAT, Keys
from ._store import RedisStore, RedisUnavailable

log = logging.getLogger("ratelimiter_service")

LIMITS_REFRESH_S = 0.2
DEGRADED_PROBE_S = 0.1
RECENT_KEYS_TTL_S = 60.0
RECENT_KEYS_MAX = 1000
BLOCKS_KEPT = 1000
STOP_TIMEOUT_S = 0.5  # for the background tasks and the Redis connections, each
_RECANCEL_S = 0.02


@dataclass(frozen=True, slots=True)
class CheckResult:
    key: str
    allowed: bool
    spec: LimitSpec
    count: int
    remaining: int
    retry_after_ms: int
    reset_ms: int
    mode: Mode


@dataclass(frozen=True, slots=True)
class Block:
    key: str
    at_ms: int
    cost: int
    limit: int
    window_ms: int
    algorithm: Algorithm
    retry_after_ms: int
    mode: Mode


@dataclass(frozen=True, slots=True)
class CounterView:
    key: str
    count: int | None
    spec: LimitSpec
    remaining: int | None
    source: str  # "redis", "local" or "unavailable"
    configured: bool


def spec_to_json(spec: LimitSpec) -> str:
    return json.dumps(
        {"limit": spec.limit, "window_ms": spec.window_ms, "algorithm": spec.algorithm.value}
    )


def spec_from_json(raw: bytes | str) -> LimitSpec | None:
    try:
        data = json.loads(raw)
        return LimitSpec(int(data["limit"]), int(data["window_ms"]), Algorithm(data["algorithm"]))
    except (ValueError, KeyError, TypeError):
        return None


def _ms(us: int) -> int:
    return math.ceil(us / 1000) if us > 0 else 0


class Limiter:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.keys = Keys(config.namespace)
        self.store = RedisStore(
            config.redis_url,
            config.redis_timeout_ms / 1000,
            on_latency=metrics.redis_latency.observe,
            on_error=metrics.redis_errors.inc,
        )
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self.mode = Mode.DEGRADED
        self.last_error: str | None = "not connected yet"
        self.local = LocalLimiter()
        self._limits: dict[str, LimitSpec] = {}
        self._limits_version: bytes | str | None = None
        self._limits_loaded = False
        self.config_changed_at: float | None = None
        """Epoch seconds of the last change to this node's configured limits (None: none
        since it started): set by a PUT or DELETE here, or when a refresh brings another
        node's change."""
        self._recent: dict[str, float] = {}
        self._blocks: deque[Block] = deque(maxlen=BLOCKS_KEPT)
        self._token_prefix = f"{config.node_id}:{secrets.token_hex(4)}:"
        self._sequence = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._node_clock = config.clock is ClockSource.NODE

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(RedisUnavailable):
            await self.store.load_scripts()
            await self._refresh_limits()
            await self._heartbeat()
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._limits_loop(), name="limits"),
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
        ]

    async def stop(self) -> None:
        """End the background tasks and close the Redis connections, in bounded time.

        A cancel can be lost: redis-py sends every command through ``asyncio.wait_for``,
        which on Python 3.11 returns the result and drops a cancel that lands in the
        moment the write has finished but wait_for has not resumed yet (CPython
        gh-86296, fixed in 3.12). The loop then carried on, ``await task`` never
        returned, and the node ignored SIGTERM until SIGKILL. So the loops also stop
        on a flag, a task still running is cancelled again, and nothing here waits
        more than ``STOP_TIMEOUT_S``.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT_S
        pending = {task for task in self._tasks if not task.done()}
        while pending and loop.time() < deadline:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=_RECANCEL_S)
        if pending:
            names = ", ".join(sorted(task.get_name() for task in pending))
            log.error("background tasks still running after %.1f s: %s", STOP_TIMEOUT_S, names)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("background task %s failed", task.get_name(), exc_info=task.exception())
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.store.close()
        except TimeoutError:
            log.error("closing the Redis connections took more than %.1f s", STOP_TIMEOUT_S)

    # -- mode ------------------------------------------------------------------------------

    def _degrade(self, error: Exception) -> None:
        self.last_error = str(error)
        if self.mode is Mode.NORMAL:
            log.warning("redis unreachable, degraded (policy %s): %s", self.config.policy.value,
                        error)  # fmt: skip
            self.mode = Mode.DEGRADED
            self.local.clear()
            self.metrics.degraded.set(1)
            self.metrics.redis_up.set(0)

    def _recover(self) -> None:
        if self.mode is Mode.DEGRADED:
            if self.last_error != "not connected yet":
                log.warning("redis reachable again, back to normal")
            self.mode = Mode.NORMAL
            self.last_error = None
            self.local.clear()
            self.metrics.degraded.set(0)
            self.metrics.redis_up.set(1)

    # -- decisions -------------------------------------------------------------------------

    def spec_for(self, key: str) -> LimitSpec:
        return self._limits.get(key, self.config.default_limit)

    def _now_arg(self) -> str:
        # read the clock on every call: under libfaketime it is the skewed one
        return str(time.time_ns() // 1000) if self._node_clock else ""

    async def _script(self, key: str, spec: LimitSpec, cost: int) -> Decision:
        args: list[str | int] = [spec.limit, spec.window_ms, cost, self._now_arg()]
        if spec.algorithm is Algorithm.SLIDING_LOG:
            args.append(f"{self._token_prefix}{next(self._sequence)}")
        raw = await self.store.evalsha(
            CHECK_SCRIPTS[spec.algorithm], self.keys.state(spec.algorithm, key), args
        )
        assert isinstance(raw, list)
        allowed, count, remaining, retry, reset = raw
        return Decision(allowed == 1, int(count), int(remaining), int(retry), int(reset))

    def _degraded_decision(self, key: str, spec: LimitSpec, cost: int) -> Decision:
        policy = self.config.policy
        if policy is Policy.LOCAL:
            return self.local.decide(key, spec, cost, time.time_ns() // 1000)
        if policy is Policy.FAIL_OPEN:
            return Decision(True, 0, spec.limit, 0, 0)
        retry_us = min(spec.window_ms, 1000) * 1000
        return Decision(False, 0, 0, retry_us, retry_us)

    async def check(self, key: str, cost: int, spec: LimitSpec) -> CheckResult:
        self._recent[key] = time.monotonic()
        decision: Decision | None = None
        if self.mode is Mode.NORMAL:
            try:
                decision = await self._script(key, spec, cost)
            except RedisUnavailable as error:
                self._degrade(error)
        mode = Mode.NORMAL if decision is not None else Mode.DEGRADED
        if decision is None:
            decision = self._degraded_decision(key, spec, cost)
        result = CheckResult(
            key,
            decision.allowed,
            spec,
            decision.count,
            decision.remaining,
            _ms(decision.retry_after_us),
            _ms(decision.reset_us),
            mode,
        )
        if decision.allowed:
            self.metrics.allowed[mode.value].inc()
        else:
            self.metrics.denied[mode.value].inc()
            self._blocks.append(
                Block(
                    key,
                    time.time_ns() // 1_000_000,
                    cost,
                    spec.limit,
                    spec.window_ms,
                    spec.algorithm,
                    result.retry_after_ms,
                    mode,
                )
            )
        return result

    def blocks(self, limit: int) -> list[Block]:
        return list(itertools.islice(reversed(self._blocks), limit))

    # -- counters --------------------------------------------------------------------------

    def counter_keys(self) -> list[str]:
        keys = dict.fromkeys(self._limits)
        for key in self._recent:
            if len(keys) >= RECENT_KEYS_MAX + len(self._limits):
                break
            keys[key] = None
        return sorted(keys)

    async def counters(self) -> list[CounterView]:
        keys = self.counter_keys()
        specs = [(key, self.spec_for(key)) for key in keys]
        if self.mode is Mode.NORMAL:
            try:
                decisions = await asyncio.gather(
                    *(self._script(key, spec, 0) for key, spec in specs)
                )
            except RedisUnavailable as error:
                self._degrade(error)
            else:
                return [
                    CounterView(k, d.count, s, d.remaining, "redis", k in self._limits)
                    for (k, s), d in zip(specs, decisions, strict=True)
                ]
        if self.config.policy is Policy.LOCAL:
            now = time.time_ns() // 1000
            views = []
            for key, spec in specs:
                d = self.local.peek(key, spec, now)
                views.append(CounterView(key, d.count, spec, d.remaining, "local",
                                         key in self._limits))  # fmt: skip
            return views
        return [CounterView(k, None, s, None, "unavailable", k in self._limits) for k, s in specs]

    async def reset(self, key: str) -> None:
        names = self.keys.all_state(key)
        await self.store.call(lambda client: client.delete(*names))
        self.local.reset(key)
        self.metrics.counter_resets.inc()

    # -- limits ----------------------------------------------------------------------------

    def configured_limit(self, key: str) -> LimitSpec | None:
        return self._limits.get(key)

    async def set_limit(self, key: str, spec: LimitSpec) -> None:
        async def write(client: aioredis.Redis) -> None:
            pipe = client.pipeline(transaction=True)
            pipe.hset(self.keys.limits, key, spec_to_json(spec))
            pipe.incr(self.keys.limits_version)
            await pipe.execute()

        await self.store.call(write)
        if self._limits.get(key) != spec:
            self.config_changed_at = time.time()
        self._limits[key] = spec
        self.metrics.limit_updates.inc()

    async def delete_limit(self, key: str) -> bool:
        async def remove(client: aioredis.Redis) -> bool:
            pipe = client.pipeline(transaction=True)
            pipe.hdel(self.keys.limits, key)
            pipe.incr(self.keys.limits_version)
            removed, _ = await pipe.execute()
            return bool(removed)

        removed = await self.store.call(remove)
        if self._limits.pop(key, None) is not None:
            self.config_changed_at = time.time()
        self.metrics.limit_updates.inc()
        return removed

    async def _refresh_limits(self) -> None:
        version: bytes | str | None = await self.store.call(
            lambda client: client.get(self.keys.limits_version)
        )
        if version == self._limits_version and version is not None:
            return
        raw: dict[bytes | str, bytes | str] = await self.store.call(
            lambda client: client.hgetall(self.keys.limits)
        )
        limits: dict[str, LimitSpec] = {}
        for field, value in raw.items():
            spec = spec_from_json(value)
            if spec is not None:
                limits[field.decode() if isinstance(field, bytes) else field] = spec
        if limits != self._limits and self._limits_loaded:
            self.config_changed_at = time.time()  # another node's change (not the first load)
        self._limits = limits
        self._limits_version = version
        self._limits_loaded = True

    # -- registry --------------------------------------------------------------------------

    def entry(self) -> NodeEntry:
        c = self.config
        return NodeEntry(
            id=c.node_id,
            address=c.advertise_address,
            started_at=self.started_at,
            pid=os.getpid(),
            policy=c.policy.value,
            clock=c.clock.value,
            heartbeat_ms=c.heartbeat_ms,
            mode=self.mode.value,
        )

    async def _heartbeat(self) -> None:
        # the entry says "normal": it is written only when Redis answers
        entry = dataclasses.replace(self.entry(), mode=Mode.NORMAL.value)
        try:
            await self.store.evalsha(
                HEARTBEAT, (self.keys.nodes, self.keys.nodes_seen), (self.config.node_id,
                                                                     entry.to_json())
            )  # fmt: skip
        except RedisUnavailable as error:
            self._degrade(error)
            raise
        self._recover()

    async def nodes(self) -> list[NodeView]:
        return await self.store.call(lambda client: list_nodes(client, self.keys))

    # -- loops -----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        period = self.config.heartbeat_ms / 1000
        while not self._stopping:
            delay = min(period, DEGRADED_PROBE_S) if self.mode is Mode.DEGRADED else period
            await asyncio.sleep(delay)
            await self._guard(self._heartbeat())

    async def _limits_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(LIMITS_REFRESH_S)
            if self.mode is Mode.NORMAL:
                await self._guard(self._refresh_limits())

    async def _housekeeping_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            cutoff = time.monotonic() - RECENT_KEYS_TTL_S
            stale = [key for key, seen in self._recent.items() if seen < cutoff]
            for key in stale:
                del self._recent[key]
            if len(self._recent) > RECENT_KEYS_MAX:
                by_age = sorted(self._recent.items(), key=lambda item: item[1])
                for key, _ in by_age[: len(self._recent) - RECENT_KEYS_MAX]:
                    del self._recent[key]
            self.metrics.active_counters.set(len(set(self._recent) | set(self._limits)))

    async def _guard(self, work: Coroutine[object, object, None]) -> None:
        try:
            await work
        except RedisUnavailable as error:
            self._degrade(error)
        except Exception:
            log.exception("background task failed")


def uptime_s(limiter: Limiter) -> float:
    return time.monotonic() - limiter.started_mono


__all__: Sequence[str] = ("Block", "CheckResult", "CounterView", "Limiter")
