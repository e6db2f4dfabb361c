"""Observing the rate limiter cluster in the engine's generic vocabulary.

Per node, each tick: ``/healthz`` (reachable, start time, wall clock), ``/readyz``
(Redis reachable from the node, mode), ``/metrics`` (request and error rates, check
latency, the node's calls to Redis) and ``/api/counters`` (the node's view of each
key's count). Redis itself is probed read-only (PING, INFO, DBSIZE). The client
history is judged for the rate-limit promise: the limit each node reports and, when
the subject declared one, the declared limit (a node configured more loosely than
declared breaks the declared promise), over the requests sent since the nodes' limits
last changed (``/healthz``'s ``config_changed_at``: a window straddling a change is
judged by neither configuration). Every call has a short timeout, so a frozen node
costs one timeout, never a stalled monitor.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pytest_operator._checkers import ClientSeen, client_seen
from pytest_operator._cluster import CLIENT
from pytest_operator._history import History, Op
from pytest_operator._prom import Scrape, delta, histogram_quantile
from pytest_operator._signals import (
    ComponentSignals,
    Divergence,
    Fact,
    LinkSignals,
    Observation,
    ProbeFailure,
    SafetyViolation,
)
from subjects.ratelimiter.actions import Declared
from subjects.ratelimiter.checkers import max_admitted_in_window

REDIS = "redis"
PROBE_TIMEOUT = 0.8
CLOCK_DRIFT_NOTE_MS = 5.0
"""A safety violation says how far the wall clock drifted from the history's monotonic
clock once that reaches this: Redis decides by its wall clock, the history by the other."""
HISTORY_HORIZON = 15.0
"""Seconds of client history each tick judges for the rate-limit promise."""


@dataclass(frozen=True, slots=True)
class CounterView:
    key: str
    count: float
    limit: int
    window_ms: int
    algorithm: str
    source: str


@dataclass(slots=True)
class _NodeProbe:
    name: str
    reachable: bool = False
    failure: ProbeFailure | None = None
    probe_ms: float | None = None
    ready: bool | None = None
    mode: str | None = None
    started_at: float | None = None
    config_changed_at: float | None = None
    clock_offset_ms: float | None = None
    scrape: Scrape | None = None
    counters: list[CounterView] = field(default_factory=list)
    detail: str | None = None


def _failure_of(exc: BaseException) -> ProbeFailure:
    if isinstance(exc, httpx.TimeoutException):
        return ProbeFailure.TIMEOUT
    return ProbeFailure.REFUSED


class RateLimiterObserver:
    def __init__(
        self,
        nodes: dict[str, str],
        redis_address: str,
        history: History,
        *,
        probe_timeout: float = PROBE_TIMEOUT,
        declared: Declared | None = None,
    ) -> None:
        self.nodes = nodes  # name -> direct base URL
        self.history = history
        self.declared = declared
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(probe_timeout), limits=httpx.Limits(max_keepalive_connections=0)
        )
        host, _, port = redis_address.rpartition(":")
        self._redis = aioredis.Redis(
            host=host,
            port=int(port),
            socket_timeout=probe_timeout,
            socket_connect_timeout=probe_timeout,
            retry=Retry(NoBackoff(), 0),  # one try: a probe reports, it does not insist
        )
        self._prev_scrape: dict[str, Scrape] = {}
        self._started: dict[str, float] = {}
        self._redis_run_id: str | None = None
        self._redis_started: float | None = None
        self._canary = f"pytest-operator:canary:{uuid.uuid4().hex}"
        self._canary_written = False
        self._data_lost = False

    async def aclose(self) -> None:
        await self._http.aclose()
        try:
            if self._canary_written:
                await self._redis.delete(self._canary)
        except (redis.exceptions.RedisError, OSError):
            pass  # the store is down or gone: nothing of ours is left in it to clean
        await self._redis.aclose()

    async def _probe_node(self, name: str, base: str) -> _NodeProbe:
        probe = _NodeProbe(name)
        t0 = time.time()
        try:
            r = await self._http.get(f"{base}/healthz")
            t1 = time.time()
            body = r.json()
            probe.reachable = r.status_code == 200
            probe.probe_ms = (t1 - t0) * 1000
            if not probe.reachable:
                probe.failure = ProbeFailure.ERROR
                probe.detail = f"/healthz answered {r.status_code}"
                return probe
            probe.started_at = float(body["started_at"])
            changed = body.get("config_changed_at")
            probe.config_changed_at = None if changed is None else float(changed)
            probe.clock_offset_ms = float(body["now_ms"]) - (t0 + t1) / 2 * 1000
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            probe.failure = _failure_of(exc)
            probe.detail = f"/healthz: {type(exc).__name__}: {exc}"
            return probe
        ready, metrics, counters = await asyncio.gather(
            self._http.get(f"{base}/readyz"),
            self._http.get(f"{base}/metrics"),
            self._http.get(f"{base}/api/counters"),
            return_exceptions=True,
        )
        if isinstance(ready, httpx.Response):
            probe.ready = ready.status_code == 200
            try:
                probe.mode = str(ready.json().get("mode"))
            except ValueError:
                probe.mode = None
        if isinstance(metrics, httpx.Response) and metrics.status_code == 200:
            probe.scrape = Scrape.parse(metrics.text, time.time())
        if isinstance(counters, httpx.Response) and counters.status_code == 200:
            try:
                probe.counters = [
                    CounterView(
                        key=str(c["key"]),
                        count=float(c["count"]),
                        limit=int(c["limit"]),
                        window_ms=int(c["window_ms"]),
                        algorithm=str(c["algorithm"]),
                        source=str(c.get("source", "redis")),
                    )
                    for c in counters.json()["counters"]
                ]
            except (ValueError, KeyError, TypeError):
                probe.counters = []
        return probe

    async def _probe_redis(self) -> tuple[ComponentSignals, list[Fact]]:
        t0 = time.time()
        try:
            info = await self._redis.info("server")
            size = await self._redis.dbsize()
            if not self._canary_written:
                await self._redis.set(self._canary, "1", ex=3600)
                self._canary_written = True
            elif not self._data_lost and not await self._redis.exists(self._canary):
                self._data_lost = True
        except (redis.exceptions.RedisError, OSError) as exc:
            timeout = isinstance(exc, redis.exceptions.TimeoutError)
            return (
                ComponentSignals(
                    REDIS,
                    reachable=False,
                    probe_failure=ProbeFailure.TIMEOUT if timeout else ProbeFailure.REFUSED,
                    started_at=self._redis_started,
                    detail=f"{type(exc).__name__}: {exc}",
                ),
                [],
            )
        t1 = time.time()
        run_id = str(info.get("run_id"))
        if run_id != self._redis_run_id:
            self._redis_run_id = run_id
            self._redis_started = t1 - float(info.get("uptime_in_seconds", 0))
        signals = ComponentSignals(
            REDIS,
            reachable=True,
            ready=True,
            started_at=self._redis_started,
            probe_ms=(t1 - t0) * 1000,
            data_intact=not self._data_lost,
        )
        return signals, [Fact("stored_items", float(size), REDIS)]

    def _node_signals(
        self, p: _NodeProbe, seen: ClientSeen | None
    ) -> tuple[ComponentSignals, LinkSignals]:
        prev = self._prev_scrape.get(p.name)
        cur = p.scrape
        latency = rate = None
        link_up: bool | None = None
        link_error_rate = link_latency = None
        if cur is not None:
            self._prev_scrape[p.name] = cur
            dt = max(1e-3, cur.at - prev.at) if prev is not None else None
            total = delta(prev, cur, "ratelimiter_requests_total")
            if total is not None and dt is not None:
                rate = total / dt
            p99 = histogram_quantile(prev, cur, "ratelimiter_check_latency_seconds", 0.99)
            latency = None if p99 is None else p99 * 1000
            up = cur.value("ratelimiter_redis_up")
            link_up = None if up is None else up >= 1
            redis_errors = delta(prev, cur, "ratelimiter_redis_errors_total")
            calls = delta(prev, cur, "ratelimiter_redis_latency_seconds_count")
            if redis_errors is not None and calls is not None and redis_errors + calls > 0:
                link_error_rate = redis_errors / (redis_errors + calls)
            lp99 = histogram_quantile(prev, cur, "ratelimiter_redis_latency_seconds", 0.99)
            link_latency = None if lp99 is None else lp99 * 1000
        if p.ready is False:
            link_up = False
        component = ComponentSignals(
            p.name,
            reachable=p.reachable,
            ready=p.ready,
            degraded=None if p.mode is None else p.mode != "normal",
            latency_p99_ms=latency,
            error_rate=None if seen is None else seen.error_rate,
            request_rate=rate,
            started_at=p.started_at,
            config_changed_at=p.config_changed_at,
            clock_offset_ms=p.clock_offset_ms,
            probe_ms=p.probe_ms,
            probe_failure=p.failure,
            detail=p.detail,
        )
        link = LinkSignals(
            p.name,
            REDIS,
            up=link_up if p.reachable else None,
            error_rate=link_error_rate,
            latency_p99_ms=link_latency,
        )
        return component, link

    def _divergences(self, probes: Sequence[_NodeProbe]) -> list[Divergence]:
        views: dict[str, list[tuple[str, CounterView]]] = {}
        for p in probes:
            for c in p.counters:
                views.setdefault(c.key, []).append((p.name, c))
        out: list[Divergence] = []
        for key, seen in sorted(views.items()):
            store_views = [c.count for _, c in seen if c.source == "redis"]
            if not store_views:
                continue
            truth = statistics.median(store_views)
            for name, c in seen:
                if c.source != "redis":
                    out.append(Divergence(name, REDIS, key, c.count, truth))
        return out

    def _safety(
        self, probes: Sequence[_NodeProbe], history: Sequence[Op], now: float
    ) -> list[SafetyViolation]:
        limits: dict[str, CounterView] = {}
        for p in probes:
            for c in p.counters:
                limits.setdefault(c.key, c)
        if not limits:
            return []
        since = now - HISTORY_HORIZON
        changes = [p.config_changed_at for p in probes if p.config_changed_at is not None]
        if changes:
            since = max(since, *changes)
        ops = [op for op in history if op.send >= since]
        out: list[SafetyViolation] = []
        for key, view in sorted(limits.items()):
            promises = {(view.limit, view.window_ms)}
            if self.declared is not None:
                promises.add((self.declared.limit, self.declared.window_ms))
            broken = []
            for limit, window_ms in sorted(promises):
                found = max_admitted_in_window(
                    [op for op in ops if op.key == key], window_ms / 1000
                )
                if found is not None and found.count > limit:
                    broken.append((found.count - limit, limit, window_ms, found))
            if broken:
                _, limit, window_ms, worst = max(broken, key=lambda b: b[0])
                drift_ms = self.history.clock.drift() * 1000
                clock_note = (
                    f"; the wall clock drifted {drift_ms:+.0f} ms from the history's clock"
                    if abs(drift_ms) >= CLOCK_DRIFT_NOTE_MS
                    else ""
                )
                out.append(
                    SafetyViolation(
                        property="admitted_within_limit",
                        components=tuple(sorted(worst.by_target)),
                        observed=float(worst.count),
                        bound=float(limit),
                        at=worst.end,
                        detail=f"{worst.count} admitted in {window_ms} ms for key"
                        f" {key!r} (limit {limit}); {worst.describe()}{clock_note}",
                    )
                )
        return out

    async def observe(self) -> Observation:
        redis_probe = asyncio.create_task(self._probe_redis())
        probes = list(
            await asyncio.gather(*(self._probe_node(n, u) for n, u in self.nodes.items()))
        )
        redis_signals, facts = await redis_probe
        now = time.time()
        components = [redis_signals]
        links = []
        history = self.history.snapshot()  # one copy per tick, for both judges
        seen = client_seen(history, now)
        for p in probes:
            c, link = self._node_signals(p, seen.get(p.name))
            components.append(c)
            links.append(link)
        for name, s in sorted(seen.items()):
            # the clients' link to the node, judged by what they saw through it
            links.append(
                LinkSignals(
                    CLIENT,
                    name,
                    up=None,
                    error_rate=s.error_rate,
                    latency_p99_ms=s.latency_p99_ms,
                )
            )
        return Observation(
            at=now,
            components=tuple(components),
            links=tuple(links),
            divergences=tuple(self._divergences(probes)),
            safety=tuple(self._safety(probes, history, now)),
            facts=tuple(facts),
            clients_since=min((op.send for op in history), default=None),
        )
