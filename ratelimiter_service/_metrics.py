"""Prometheus metrics of one node, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
)  # fmt: skip


class Metrics:
    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"node": node_id}
        r = self.registry
        self.requests = Counter(
            "ratelimiter_requests",
            "Rate limit decisions, by decision and mode",
            ["node", "decision", "mode"],
            registry=r,
        )
        self.check_latency = Histogram(
            "ratelimiter_check_latency_seconds",
            "Time to decide one /check, from request body to response",
            ["node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(**labels)
        self.redis_latency = Histogram(
            "ratelimiter_redis_latency_seconds",
            "Latency of this node's calls to Redis (one pipeline or command)",
            ["node"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(**labels)
        self.redis_errors = Counter(
            "ratelimiter_redis_errors", "Failed calls to Redis", ["node"], registry=r
        ).labels(**labels)
        self.redis_up = Gauge(
            "ratelimiter_redis_up", "1 while Redis answers this node", ["node"], registry=r
        ).labels(**labels)
        self.degraded = Gauge(
            "ratelimiter_degraded",
            "1 while this node runs without Redis (its policy decides)",
            ["node"],
            registry=r,
        ).labels(**labels)
        self.active_counters = Gauge(
            "ratelimiter_active_counters",
            "Keys this node served recently or that have a configured limit",
            ["node"],
            registry=r,
        ).labels(**labels)
        self.limit_updates = Counter(
            "ratelimiter_limit_updates", "Limits set or deleted through this node", ["node"],
            registry=r,
        ).labels(**labels)  # fmt: skip
        self.counter_resets = Counter(
            "ratelimiter_counter_resets", "Counters reset through this node", ["node"],
            registry=r,
        ).labels(**labels)  # fmt: skip
        self.allowed = {
            mode: self.requests.labels(node=node_id, decision="allowed", mode=mode)
            for mode in ("normal", "degraded")
        }
        self.denied = {
            mode: self.requests.labels(node=node_id, decision="denied", mode=mode)
            for mode in ("normal", "degraded")
        }
        self.redis_up.set(0)
        self.degraded.set(0)
