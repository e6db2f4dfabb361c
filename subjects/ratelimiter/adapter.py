"""The ratelimiter subject adapter: how the engine starts, observes and drives it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

from pytest_operator._subject import ClusterView, SubjectConfig
from pytest_operator._topology import Topology
from subjects.ratelimiter.actions import ALGORITHMS, Declared, ManagementApi, catalogue
from subjects.ratelimiter.cluster import CLOCKS, POLICIES, node_names, ratelimiter_cluster_spec
from subjects.ratelimiter.invariants import invariants
from subjects.ratelimiter.observe import REDIS, RateLimiterObserver

if TYPE_CHECKING:
    from pytest_operator._actions import Action
    from pytest_operator._cluster import ClusterSpec
    from pytest_operator._history import History
    from pytest_operator._invariants import Invariant
    from pytest_operator._linearizable import Model
    from pytest_operator._signals import Observation
    from pytest_operator._workload import Requester

# option -> (valid values or None for a positive integer, default)
OPTIONS: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "policy": (POLICIES, "fail_open"),
    "clock": (CLOCKS, "redis"),
    "algorithm": (ALGORITHMS, "sliding_log"),
    "limit": (None, "100"),
    "window_ms": (None, "1000"),
    "redis_timeout_ms": (None, "100"),
    "latency_threshold_ms": (None, "100"),
    "client_latency_threshold_ms": (None, "500"),
    "prometheus": (("0", "1"), "0"),  # 1: a real Prometheus scrapes the nodes (embedded)
}


class RateLimiterSession:
    def __init__(self, cluster: ClusterView, config: SubjectConfig, history: History) -> None:
        self.config = config
        self.targets: Sequence[str] = node_names(config.nodes)
        self.topology: Topology = cluster.topology()
        direct = {n: cluster.address(n).url() for n in self.targets}
        self._client_urls = {n: cluster.client_url(n) for n in self.targets}
        self.declared = Declared(
            limit=int(config.get("limit", "100")),
            window_ms=int(config.get("window_ms", "1000")),
            algorithm=config.get("algorithm", "sliding_log"),
        )
        """The limit the scenario declared (the subject's options) for every key."""
        self._observer = RateLimiterObserver(
            direct, str(cluster.address(REDIS)), history, declared=self.declared
        )
        self._api = ManagementApi(direct)
        self.invariants: Sequence[Invariant] = invariants(
            latency_ms=float(config.get("latency_threshold_ms", "100")),
            client_latency_ms=float(config.get("client_latency_threshold_ms", "500")),
        )
        self.actions: Sequence[Action] = catalogue(self._api, cluster.restart, self.declared)
        self.model: Model | None = None  # its promise is judged by ghost_allowing instead
        self._requesters: list[Requester] = []

    async def observe(self) -> Observation:
        return await self._observer.observe()

    def requester(self) -> Requester:
        from subjects.ratelimiter.client import RateLimiterClient

        client = RateLimiterClient(self._client_urls)
        self._requesters.append(client)
        return client

    async def limit_on_nodes(self, key: str) -> dict[str, tuple[int, int, str]]:
        """Each answering node's limit for ``key`` as it applies it (the configured one, else
        its default): node -> (limit, window_ms, algorithm)."""
        out: dict[str, tuple[int, int, str]] = {}
        for node, r in await self._api.by_node("GET", f"/api/limits/{quote(key, safe='')}"):
            if r.status_code == 404:  # not configured: the node's default, the declared one
                d = self.declared
                out[node] = (d.limit, d.window_ms, d.algorithm)
            elif r.status_code == 200:
                body = r.json()
                out[node] = (int(body["limit"]), int(body["window_ms"]), str(body["algorithm"]))
        return out

    async def reset(self) -> None:
        """Forget every limit and counter, so the scenario starts from the defaults."""
        keys: set[str] = set()
        for r in await self._api.each("GET", "/api/counters"):
            if r.status_code == 200:
                keys.update(str(c["key"]) for c in r.json().get("counters", []))
        for key in sorted(keys):
            quoted = quote(key, safe="")
            await self._api.request("DELETE", f"/api/limits/{quoted}", allow=(404,))
            await self._api.request("POST", f"/api/counters/{quoted}/reset")

    async def aclose(self) -> None:
        for requester in self._requesters:
            await requester.aclose()
        await self._observer.aclose()
        await self._api.aclose()


class RateLimiterSubject:
    name = "ratelimiter"

    def configure(self, nodes: int, options: Mapping[str, object]) -> SubjectConfig:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"ratelimiter: unknown option(s) {', '.join(unknown)};"
                f" options: {', '.join(OPTIONS)}"
            )
        clean: dict[str, object] = {}
        for name, (choices, default) in OPTIONS.items():
            value = str(options.get(name, default))
            if choices is not None and value not in choices:
                valid = ", ".join(choices)
                raise ValueError(
                    f"ratelimiter: {name}={value}: invalid value; valid values: {valid}"
                )
            if choices is None and not (value.isdigit() and int(value) > 0):
                raise ValueError(f"ratelimiter: {name}={value}: must be a positive integer")
            clean[name] = value
        return SubjectConfig.of(nodes, clean)

    def embedded_spec(self, config: SubjectConfig) -> ClusterSpec:
        return ratelimiter_cluster_spec(
            nodes=config.nodes,
            policy=config.get("policy", "fail_open"),
            clock=config.get("clock", "redis"),
            prometheus=config.get("prometheus", "0") == "1",
            options={
                "default_algorithm": config.get("algorithm", "sliding_log"),
                "default_limit": config.get("limit", "100"),
                "default_window_ms": config.get("window_ms", "1000"),
                "redis_timeout_ms": config.get("redis_timeout_ms", "100"),
            },
        )

    def open(
        self, cluster: ClusterView, config: SubjectConfig, history: History
    ) -> RateLimiterSession:
        return RateLimiterSession(cluster, config, history)
