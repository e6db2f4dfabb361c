"""The rate limiter's cluster, for every backend: one Redis, N nodes.

Components: ``redis`` (datastore) and ``node-1`` .. ``node-N`` (services, run under
libfaketime so a node's clock can be skewed). Links: ``node-i -> redis`` (each node reaches
Redis through its own proxy, so one node can be cut off alone) and ``client -> node-i``
(the harness and monitor reach each node through a proxy; the node advertises that proxy's
address in the registry).

With ``prometheus=True`` a real Prometheus (Debian's ``prometheus`` package) starts after
the nodes and scrapes every node's ``/metrics`` directly, not through the client proxies,
every second; its URL is ``cluster.address("prometheus").url()``. It is an observer: it is
left out of the topology (it is not part of the system under test, so no diagnosis can blame
it) and a cut client link does not hide a node from it.

On a container backend (``--cluster=compose``) each component runs in an image of the
project's ``docker/images.toml``: ``redis``, ``ratelimiter-node`` (with libfaketime) and
``prometheus``; their command lines are the ones above.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from pytest_operator._cluster import (
    CLIENT,
    Address,
    Addresses,
    ClusterError,
    ClusterSpec,
    ComponentSpec,
    HttpReady,
    LinkSpec,
)
from pytest_operator._topology import ComponentKind

REDIS = "redis"
PROMETHEUS = "prometheus"
PROMETHEUS_CONFIG = "prometheus.yml"
SCRAPE_INTERVAL = "1s"
# the images of docker/images.toml each component runs in on a container backend
REDIS_IMAGE = "redis"
NODE_IMAGE = "ratelimiter-node"
PROMETHEUS_IMAGE = "prometheus"
POLICIES = ("fail_open", "fail_closed", "local")
CLOCKS = ("redis", "node")

Option = str | int | float


@dataclass(frozen=True, slots=True)
class RedisPing:
    """Ready when Redis answers ``PING`` with ``+PONG`` (a listening port is not enough:
    Redis accepts connections while it is still loading)."""

    timeout: float = 0.5

    async def __call__(self, address: Address) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(address.host, address.port)
                try:
                    writer.write(b"PING\r\n")
                    await writer.drain()
                    return (await reader.readline()).startswith(b"+PONG")
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError):
            return False


def node_names(nodes: int) -> tuple[str, ...]:
    return tuple(f"node-{i}" for i in range(1, nodes + 1))


def _redis_command(a: Addresses) -> list[str]:
    return [
        "redis-server",
        "--port",
        str(a.port(REDIS)),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(a.data_dir(REDIS)),
        "--protected-mode",
        "no",
    ]


def _flags(options: Mapping[str, Option]) -> list[str]:
    argv: list[str] = []
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _node(name: str, options: Mapping[str, Option]) -> ComponentSpec:
    def command(a: Addresses) -> list[str]:
        redis = a.via(name, REDIS)
        advertised = a.via(CLIENT, name)
        return [
            sys.executable,
            "-m",
            "ratelimiter_service",
            "--node-id",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            str(a.port(name)),
            "--redis-url",
            f"redis://{redis}/0",
            "--advertise-address",
            advertised.url(),
            *_flags(options),
        ]

    return ComponentSpec(
        name,
        ComponentKind.SERVICE,
        command,
        env=lambda a: {"PYTHONUNBUFFERED": "1"},
        ready=HttpReady("/healthz"),
        fake_clock=True,
        start_after=(REDIS,),
        # A node stops in well under a second; if its shutdown hangs, SIGKILL soon.
        stop_timeout=3.0,
        image=NODE_IMAGE,
    )


def find_prometheus() -> str:
    """The ``prometheus`` binary on PATH, or a :class:`ClusterError` saying how to get it."""
    found = shutil.which(PROMETHEUS)
    if found is None:
        raise ClusterError(
            "prometheus was asked for but is not on PATH: apt-get install prometheus "
            "(./dev test installs it)"
        )
    return found


def prometheus_config(a: Addresses, nodes: tuple[str, ...]) -> str:
    """A scrape config for every node's own address (JSON is YAML, and needs no quoting
    rules of its own)."""
    targets = [{"targets": [str(a.address(n))], "labels": {"node": n}} for n in nodes]
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": "ratelimiter", "metrics_path": "/metrics", "static_configs": targets}
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def _prometheus(nodes: tuple[str, ...]) -> ComponentSpec:
    def command(a: Addresses) -> list[str]:
        data = a.data_dir(PROMETHEUS)
        return [
            find_prometheus(),
            f"--config.file={data / PROMETHEUS_CONFIG}",
            f"--storage.tsdb.path={data / 'tsdb'}",
            f"--web.listen-address={a.address(PROMETHEUS)}",
            "--log.level=warn",
        ]

    return ComponentSpec(
        PROMETHEUS,
        ComponentKind.SERVICE,
        command,
        files=lambda a: {PROMETHEUS_CONFIG: prometheus_config(a, nodes)},
        ready=HttpReady("/-/ready"),
        start_after=nodes,
        observer=True,
        image=PROMETHEUS_IMAGE,
    )


def ratelimiter_cluster_spec(
    nodes: int = 3,
    *,
    policy: str = "fail_open",
    clock: str = "redis",
    options: Mapping[str, Option] | None = None,
    node_options: Mapping[str, Mapping[str, Option]] | None = None,
    prometheus: bool = False,
) -> ClusterSpec:
    """The spec of a Redis plus ``nodes`` rate limiter nodes.

    ``options`` are extra command-line options for every node (``{"default_limit": 10}``
    becomes ``--default-limit 10``); ``node_options`` override them per node
    (``{"node-3": {"default_limit": 20}}``), e.g. to misconfigure one node. ``prometheus``
    adds a real Prometheus scraping the nodes (an observer, outside the topology).
    """
    if nodes < 1:
        raise ValueError(f"nodes must be at least 1, got {nodes}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    names = node_names(nodes)
    per_node = dict(node_options or {})
    unknown = sorted(set(per_node) - set(names))
    if unknown:
        raise ValueError(f"node_options for unknown nodes {unknown} (nodes: {', '.join(names)})")
    common: dict[str, Option] = {"policy": policy, "clock": clock, "log_level": "warning"}
    common.update(options or {})
    return ClusterSpec(
        components=(
            ComponentSpec(
                REDIS, ComponentKind.DATASTORE, _redis_command, ready=RedisPing(), image=REDIS_IMAGE
            ),
            *(_node(n, {**common, **per_node.get(n, {})}) for n in names),
            *((_prometheus(names),) if prometheus else ()),
        ),
        links=(
            *(LinkSpec(n, REDIS) for n in names),
            *(LinkSpec(CLIENT, n) for n in names),
        ),
    )
