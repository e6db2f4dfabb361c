"""The etcd subject adapter: how the engine starts, observes and drives an etcd cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import httpx

from pytest_operator import ClusterView, LinearizabilityWatch, Register, SubjectConfig, Topology
from subjects.etcd.actions import MaintenanceApi, catalogue
from subjects.etcd.client import KEY_PREFIX, READS, prefix_range
from subjects.etcd.cluster import check_timeouts, etcd_cluster_spec, member_names
from subjects.etcd.invariants import invariants
from subjects.etcd.observe import EtcdObserver

if TYPE_CHECKING:
    from pytest_operator import (
        Action,
        ClusterSpec,
        History,
        Invariant,
        Model,
        Observation,
        Requester,
    )

# option -> (valid values, or None for a positive integer; default)
OPTIONS: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "heartbeat_ms": (None, "100"),  # etcd --heartbeat-interval
    "election_ms": (None, "1000"),  # etcd --election-timeout (>= 5 x heartbeat_ms)
    "pre_vote": (("1", "0"), "1"),  # etcd --pre-vote
    "client_timeout_ms": (None, "1000"),  # the workload client's bound on one request
    "client_error_pct": (None, "10"),  # client_errors: share of failed requests, percent
    "no_leader_grace_ms": (None, "300"),  # no_leader: how long before it is a violation
    "leader_change_window_ms": (None, "5000"),  # leader_change: flagged this long after
    "reads": (READS, "linearizable"),  # the workload's reads: through the leader, or local
}
RESET_TIMEOUT = 15.0


class EtcdSession:
    """An open etcd cluster. Its clients' history must be linearizable (a register per
    key): the observer runs the checker incrementally each tick (a stale read is the
    ``linearizable`` violation at the member that served it), and
    ``operator.check_history()`` judges the whole history against :attr:`model`."""

    def __init__(self, cluster: ClusterView, config: SubjectConfig, history: History) -> None:
        self.config = config
        self.model: Model | None = Register()
        self.targets: Sequence[str] = member_names(config.nodes)
        self.topology: Topology = cluster.topology()
        direct = {m: cluster.address(m).url() for m in self.targets}
        self._client_urls = {m: cluster.client_url(m) for m in self.targets}
        self._observer = EtcdObserver(
            direct,
            history,
            heartbeat_ms=int(config.get("heartbeat_ms", "100")),
            election_ms=int(config.get("election_ms", "1000")),
            watch=LinearizabilityWatch(history, self.model),
        )
        self._api = MaintenanceApi(direct)
        self.invariants: Sequence[Invariant] = invariants(
            no_leader_grace_s=int(config.get("no_leader_grace_ms", "300")) / 1000,
            leader_change_window_s=int(config.get("leader_change_window_ms", "5000")) / 1000,
            client_error_rate=int(config.get("client_error_pct", "10")) / 100,
        )
        self.actions: Sequence[Action] = catalogue(self._api, cluster.restart)
        self._requesters: list[Requester] = []
        self._direct = direct

    async def observe(self) -> Observation:
        return await self._observer.observe()

    def requester(self) -> Requester:
        from subjects.etcd.client import EtcdClient

        timeout = int(self.config.get("client_timeout_ms", "1000")) / 1000
        reads = self.config.get("reads", "linearizable")
        client = EtcdClient(self._client_urls, timeout=timeout, reads=reads)
        self._requesters.append(client)
        return client

    async def reset(self) -> None:
        """Delete every key the workload wrote (one delete-range through any member that
        has a quorum; retried for a while, as a cluster just healed may still elect)."""
        body = json.dumps(prefix_range(KEY_PREFIX))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESET_TIMEOUT
        errors: list[str] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as http:
            while loop.time() < deadline:
                for name, base in self._direct.items():
                    try:
                        r = await http.post(f"{base}/v3/kv/deleterange", content=body)
                        if r.status_code == 200 and "error" not in r.json():
                            return
                        errors.append(f"{name}: HTTP {r.status_code} {r.text[:100]}")
                    except (httpx.HTTPError, ValueError) as exc:
                        errors.append(f"{name}: {type(exc).__name__}")
                await asyncio.sleep(0.2)
        raise RuntimeError(
            f"etcd reset: no member deleted the workload's keys in {RESET_TIMEOUT:g} s"
            f" ({'; '.join(errors[-len(self._direct) :])})"
        )

    async def aclose(self) -> None:
        for requester in self._requesters:
            await requester.aclose()
        await self._observer.aclose()
        await self._api.aclose()


class EtcdSubject:
    name = "etcd"

    def configure(self, nodes: int, options: Mapping[str, object]) -> SubjectConfig:
        member_names(nodes)  # 3 or 5, or a ValueError naming both
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"etcd: unknown option(s) {', '.join(unknown)}; options: {', '.join(OPTIONS)}"
            )
        clean: dict[str, object] = {}
        for name, (choices, default) in OPTIONS.items():
            value = str(options.get(name, default))
            if choices is not None and value not in choices:
                raise ValueError(
                    f"etcd: {name}={value}: invalid value; valid values: {', '.join(choices)}"
                )
            if choices is None and not (value.isdigit() and int(value) > 0):
                raise ValueError(f"etcd: {name}={value}: must be a positive integer")
            clean[name] = value
        if int(str(clean["client_error_pct"])) > 100:
            raise ValueError(
                f"etcd: client_error_pct={clean['client_error_pct']}: must be 1 to 100"
            )
        check_timeouts(int(str(clean["heartbeat_ms"])), int(str(clean["election_ms"])))
        return SubjectConfig.of(nodes, clean)

    def embedded_spec(self, config: SubjectConfig) -> ClusterSpec:
        return etcd_cluster_spec(
            config.nodes,
            heartbeat_ms=int(config.get("heartbeat_ms", "100")),
            election_ms=int(config.get("election_ms", "1000")),
            pre_vote=config.get("pre_vote", "1") == "1",
        )

    def open(self, cluster: ClusterView, config: SubjectConfig, history: History) -> EtcdSession:
        return EtcdSession(cluster, config, history)
