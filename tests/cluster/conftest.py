"""A generic stand-in cluster for the engine's tests: redis-server plus stand-in nodes
(tests/cluster/standin_node.py), each reaching Redis through its own proxy, clients reaching
each node through a proxy too."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_operator._cluster import Addresses, ClusterSpec, ComponentSpec, HttpReady, LinkSpec
from pytest_operator._containers import DockerApi
from pytest_operator._docker import DockerEngine, DockerMissingError, find_dockerd
from pytest_operator._images import ensure_images
from pytest_operator._topology import ComponentKind

STANDIN = Path(__file__).with_name("standin_node.py")


def redis_command(a: Addresses) -> list[str]:
    return [
        "redis-server",
        "--port",
        str(a.port("redis")),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(a.data_dir("redis")),
    ]


def standin_spec(nodes: int = 2, *, fake_clock: bool = True) -> ClusterSpec:
    names = [f"web-{i}" for i in range(1, nodes + 1)]

    def node(name: str) -> ComponentSpec:
        def command(a: Addresses) -> list[str]:
            return [sys.executable, str(STANDIN), str(a.port(name)), str(a.via(name, "redis").port)]

        return ComponentSpec(
            name,
            ComponentKind.SERVICE,
            command,
            ready=HttpReady("/healthz"),
            fake_clock=fake_clock,
            start_after=("redis",),
        )

    return ClusterSpec(
        components=(
            ComponentSpec("redis", ComponentKind.DATASTORE, redis_command),
            *(node(n) for n in names),
        ),
        links=(
            *(LinkSpec(n, "redis") for n in names),
            *(LinkSpec("client", n) for n in names),
        ),
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    """Our own dockerd at the default root, held for the module (started if needed; a
    daemon started by hand keeps running), with the rate limiter's images: for the
    compose backend's tests."""
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root: these tests run our own engine; run them as root")
    try:
        find_dockerd()
    except DockerMissingError as exc:
        pytest.skip(f"no Docker engine here: {exc}")
    engine = DockerEngine()
    with engine.lease():
        ensure_images(engine, names=("redis", "ratelimiter-node", "toxiproxy"))
        yield engine


@pytest.fixture
def api(engine: DockerEngine) -> Iterator[DockerApi]:
    client = DockerApi(engine.socket)
    try:
        yield client
    finally:
        client.close()
