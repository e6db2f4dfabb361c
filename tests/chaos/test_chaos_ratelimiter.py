"""Every fault against a real 3-node rate limiter cluster: it takes effect, and it is
healed on exit (also when the body raises). One cluster for the module, reset between
tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import redis.asyncio as aioredis

from pytest_operator._chaos import (
    Chaos,
    blackhole,
    clock_skew,
    compose,
    kill,
    latency,
    partition,
    pause,
    reset_peer,
    restart_with_data_loss,
)
from pytest_operator._cluster import EmbeddedCluster
from pytest_operator._process import port_is_open
from subjects.ratelimiter.cluster import ratelimiter_cluster_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedCluster]:
    spec = ratelimiter_cluster_spec(3)
    async with EmbeddedCluster(spec, base_dir=tmp_path_factory.mktemp("runs")) as c:
        yield c


@pytest.fixture
async def http(cluster: EmbeddedCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        yield client
    await cluster.reset()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> bool:
    """Poll until ``check`` holds (generous: the machine is shared and loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return await check()


async def status(http: httpx.AsyncClient, url: str) -> int | None:
    try:
        return (await http.get(url)).status_code
    except httpx.HTTPError:
        return None


def direct(cluster: EmbeddedCluster, node: str, path: str) -> str:
    """The node's own address (not through the client proxy)."""
    return cluster.address(node).url(path=path)


async def is_ready(http: httpx.AsyncClient, cluster: EmbeddedCluster, node: str) -> bool:
    return await status(http, direct(cluster, node, "/readyz")) == 200


async def is_unready(http: httpx.AsyncClient, cluster: EmbeddedCluster, node: str) -> bool:
    return await status(http, direct(cluster, node, "/readyz")) == 503


async def test_partition_cuts_only_that_link(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    async with partition("node-2", "redis").inject(cluster):
        assert await eventually(lambda: is_unready(http, cluster, "node-2"))
        assert await is_ready(http, cluster, "node-1")
        assert await is_ready(http, cluster, "node-3")
        assert not (await cluster.toxiproxy.get_proxy("node-2->redis")).enabled
    assert (await cluster.toxiproxy.get_proxy("node-2->redis")).enabled
    assert await eventually(lambda: is_ready(http, cluster, "node-2"))


async def test_partition_heals_when_the_body_raises(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    with pytest.raises(RuntimeError, match=r"^scenario failed$"):
        async with Chaos(cluster).partition("node-2", "redis"):
            assert not (await cluster.toxiproxy.get_proxy("node-2->redis")).enabled
            raise RuntimeError("scenario failed")
    assert (await cluster.toxiproxy.get_proxy("node-2->redis")).enabled
    assert await eventually(lambda: is_ready(http, cluster, "node-2"))


async def test_blackhole_swallows_the_links_traffic(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    async with blackhole("node-2", "redis").inject(cluster):
        toxics = await cluster.toxiproxy.toxics("node-2->redis")
        assert {(t.type, t.attributes["timeout"]) for t in toxics} == {("timeout", 0)}
        assert len(toxics) == 2  # both directions
        assert await eventually(lambda: is_unready(http, cluster, "node-2"))
        assert await is_ready(http, cluster, "node-1")
    assert await cluster.toxiproxy.toxics("node-2->redis") == ()
    assert await eventually(lambda: is_ready(http, cluster, "node-2"))


async def test_latency_adds_at_least_the_delay(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    url = cluster.client_url("node-1", "/healthz")
    async with latency("client", "node-1", 300, jitter_ms=50).inject(cluster):
        for _ in range(3):
            began = time.monotonic()
            assert (await http.get(url)).status_code == 200
            assert time.monotonic() - began >= 0.25  # 300 ms +/- 50 ms jitter
    assert await cluster.toxiproxy.toxics("client->node-1") == ()


async def test_bandwidth_slows_the_answers(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    url = cluster.client_url("node-1", "/metrics")
    size = len((await http.get(url)).content)
    assert size > 2048
    async with Chaos(cluster).bandwidth("client", "node-1", kbps=2):
        began = time.monotonic()
        response = await http.get(url, timeout=30)
        assert response.status_code == 200
        assert time.monotonic() - began >= 0.8 * len(response.content) / 2048 - 0.5
    assert await cluster.toxiproxy.toxics("client->node-1") == ()


async def test_reset_peer_resets_connections(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    async with reset_peer("client", "node-1").inject(cluster):
        assert await status(http, cluster.client_url("node-1", "/healthz")) is None
        assert await status(http, cluster.client_url("node-2", "/healthz")) == 200
    assert await eventually(
        lambda: _is(status(http, cluster.client_url("node-1", "/healthz")), 200)
    )


async def _is(value: Awaitable[int | None], expected: int) -> bool:
    return await value == expected


async def test_kill_closes_the_port_and_restart_heals(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    proc = cluster.process("node-3")
    before = proc.pid
    port = cluster.address("node-3").port
    async with kill("node-3").inject(cluster):
        assert not proc.alive
        assert not port_is_open(port)
        assert await status(http, cluster.client_url("node-3", "/healthz")) is None
    assert proc.alive and proc.pid != before
    health = (await http.get(cluster.client_url("node-3", "/healthz"))).json()
    assert health["node"] == "node-3"
    assert health["uptime_s"] < 30  # a fresh process


async def test_pause_freezes_and_resume_heals(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    url = cluster.client_url("node-1", "/healthz")
    async with pause("node-1").inject(cluster):
        assert cluster.process("node-1").paused
        with pytest.raises(httpx.TimeoutException):
            await http.get(url, timeout=0.5)
        assert await status(http, cluster.client_url("node-2", "/healthz")) == 200
    assert not cluster.process("node-1").paused
    assert await eventually(lambda: _is(status(http, url), 200))


async def test_restart_with_data_loss_empties_redis(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    address = cluster.address("redis")
    db = aioredis.Redis(host=address.host, port=address.port, socket_timeout=2)
    try:
        await db.set("marker", "1")
        assert await db.dbsize() >= 1
        pid = cluster.process("redis").pid
        async with restart_with_data_loss("redis").inject(cluster):
            assert cluster.process("redis").pid != pid
            assert await db.dbsize() == 0 or await db.get("marker") is None
        assert await db.get("marker") is None
    finally:
        await db.aclose()
    for node in ("node-1", "node-2", "node-3"):
        assert await eventually(lambda n=node: is_ready(http, cluster, n))  # type: ignore[misc]


async def node_offset(http: httpx.AsyncClient, cluster: EmbeddedCluster, node: str) -> float:
    """The node's wall clock minus ours, in seconds (from /healthz now_ms)."""
    now_ms = (await http.get(direct(cluster, node, "/healthz"))).json()["now_ms"]
    return float(now_ms) / 1000 - time.time()


async def test_clock_skew_moves_one_nodes_clock(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    assert abs(await node_offset(http, cluster, "node-2")) < 5
    async with clock_skew("node-2", 120).inject(cluster):
        assert 115 < await node_offset(http, cluster, "node-2") < 125
        assert abs(await node_offset(http, cluster, "node-1")) < 5
        cluster.set_clock_offset("node-2", -60)  # the offset can change while it runs
        assert -65 < await node_offset(http, cluster, "node-2") < -55
    assert abs(await node_offset(http, cluster, "node-2")) < 5
    assert cluster.clock_file("node-2").read_text() == "+0\n"


async def test_two_faults_compose(cluster: EmbeddedCluster, http: httpx.AsyncClient) -> None:
    both = compose(partition("node-2", "redis"), clock_skew("node-1", 300))
    async with both.inject(cluster) as injection:
        assert injection.root_cause is None and len(injection.fault.root_causes) == 2
        assert await eventually(lambda: is_unready(http, cluster, "node-2"))
        assert 295 < await node_offset(http, cluster, "node-1") < 305
    assert (await cluster.toxiproxy.get_proxy("node-2->redis")).enabled
    assert abs(await node_offset(http, cluster, "node-1")) < 5
    assert await eventually(lambda: is_ready(http, cluster, "node-2"))


async def test_nested_faults_heal_when_the_body_raises(
    cluster: EmbeddedCluster, http: httpx.AsyncClient
) -> None:
    chaos = Chaos(cluster)
    with pytest.raises(ZeroDivisionError):
        async with chaos.pause("node-3"), chaos.latency("client", "node-1", 100):
            _ = 1 / 0
    assert not cluster.process("node-3").paused
    assert await cluster.toxiproxy.toxics("client->node-1") == ()


async def test_unknown_link_is_a_clear_error(cluster: EmbeddedCluster) -> None:
    with pytest.raises(KeyError) as err:
        async with partition("node-1", "node-2").inject(cluster):
            pass
    assert str(err.value).startswith("'no link between node-1 and node-2: no link node-2 -> node-1")
