"""EmbeddedCluster with redis-server, toxiproxy-server and stand-in nodes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pytest_operator._cluster import (
    ClusterError,
    ClusterSpec,
    ComponentSpec,
    EmbeddedCluster,
    HttpReady,
    LinkSpec,
    http_status,
)
from pytest_operator._process import ProcessError, port_is_open
from pytest_operator._topology import Component, ComponentKind, Link

from .conftest import redis_command, standin_spec


def listening_ports(cluster: EmbeddedCluster) -> list[int]:
    ports = [cluster.address(n).port for n in cluster.component_names()]
    ports += [cluster.proxy_address(lk.source, lk.target).port for lk in cluster.spec.links]
    ports.append(int(cluster.toxiproxy.base_url.rsplit(":", 1)[1]))
    return ports


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(standin_spec(2), base_dir=tmp_path_factory.mktemp("runs")) as c:
        yield c


@pytest.fixture(autouse=True)
async def _healthy(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if "cluster" in request.fixturenames:
        await request.getfixturevalue("cluster").reset()


async def test_everything_is_up_on_run_time_ports(cluster: EmbeddedCluster) -> None:
    procs = cluster.processes()
    assert sorted(procs) == ["redis", "toxiproxy", "web-1", "web-2"]
    assert all(p.alive for p in procs.values())
    ports = listening_ports(cluster)
    assert len(set(ports)) == len(ports) == 3 + 4 + 1
    assert all(port_is_open(p) for p in ports)
    for name in ("web-1", "web-2"):
        assert await http_status(cluster.address(name), "/readyz") == 200
        assert await http_status(cluster.proxy_address("client", name), "/healthz") == 200
    via = cluster.proxy_address("client", "web-2")
    assert cluster.client_url("web-2", "/x") == f"http://127.0.0.1:{via.port}/x"


async def test_one_proxy_per_link(cluster: EmbeddedCluster) -> None:
    proxies = await cluster.toxiproxy.proxies()
    assert sorted(proxies) == ["client->web-1", "client->web-2", "web-1->redis", "web-2->redis"]
    assert proxies["web-2->redis"].upstream == str(cluster.address("redis"))
    assert proxies["web-2->redis"].listen_port == cluster.proxy_address("web-2", "redis").port


async def test_topology(cluster: EmbeddedCluster) -> None:
    topo = cluster.topology()
    assert topo.component("redis") == Component("redis", ComponentKind.DATASTORE, "redis")
    assert topo.component("web-1") == Component("web-1", ComponentKind.SERVICE, "web-1")
    assert topo.component("client").kind is ComponentKind.CLIENT
    assert topo.link("web-2", "redis") == Link("web-2", "redis", "web-2->redis")
    assert {c.name for c in topo.components} == {"redis", "web-1", "web-2", "client"}
    assert "toxiproxy" not in {c.name for c in topo.components}  # a proxy is never a component


async def test_cutting_one_link_leaves_the_others(cluster: EmbeddedCluster) -> None:
    await cluster.toxiproxy.disable(cluster.proxy_name("web-2", "redis"))
    assert await http_status(cluster.address("web-2"), "/readyz") == 503
    assert await http_status(cluster.address("web-1"), "/readyz") == 200
    await cluster.reset()
    assert await http_status(cluster.address("web-2"), "/readyz") == 200


async def test_reset_heals_everything(cluster: EmbeddedCluster) -> None:
    await cluster.toxiproxy.disable("client->web-1")
    await cluster.process("web-2").kill()
    cluster.process("redis").pause()
    cluster.set_clock_offset("web-1", 300)
    await cluster.reset()
    assert all(p.alive and not p.paused for p in cluster.processes().values())
    assert cluster.clock_offset("web-1") == 0
    assert cluster.clock_file("web-1").read_text() == "+0\n"
    for name in ("web-1", "web-2"):
        assert await http_status(cluster.proxy_address("client", name), "/readyz") == 200


async def test_restart_with_wipe_empties_the_data_dir(cluster: EmbeddedCluster) -> None:
    data = cluster.addresses.data_dir("redis")
    (data / "marker").write_text("x")
    before = cluster.process("redis").pid
    await cluster.restart("redis", wipe=True)
    assert not (data / "marker").exists()
    assert cluster.process("redis").pid != before
    assert port_is_open(cluster.address("redis").port)


async def test_lookups_name_the_valid_choices(cluster: EmbeddedCluster) -> None:
    valid = r"\(components: redis, web-1, web-2\)"
    with pytest.raises(KeyError, match=rf"no component 'node-9' {valid}"):
        cluster.process("node-9")
    with pytest.raises(KeyError, match=r"no link web-1 -> web-2 \(links: web-1->redis, "):
        cluster.proxy_name("web-1", "web-2")
    with pytest.raises(ClusterError, match=r"^component 'redis' does not run under libfaketime"):
        cluster.clock_file("redis")


async def test_stop_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(standin_spec(2), base_dir=tmp_path)
    await cluster.start()
    assert cluster.ready_seconds is not None
    pids = [p.pid for p in cluster.processes().values()]
    ports = listening_ports(cluster)
    await cluster.stop()
    await cluster.stop()  # idempotent
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not any(port_is_open(p) for p in ports)
    assert list(cluster.run_dir.path.glob("*.pid")) == []


async def test_partial_start_failure_stops_what_started(tmp_path: Path) -> None:
    spec = ClusterSpec(
        components=(
            ComponentSpec("redis", ComponentKind.DATASTORE, redis_command),
            ComponentSpec(
                "bad",
                ComponentKind.SERVICE,
                lambda a: [sys.executable, "-c", "import sys; sys.exit('bad config: --port')"],
                ready=HttpReady("/healthz"),
                start_after=("redis",),
            ),
        ),
        links=(LinkSpec("bad", "redis"),),
    )
    cluster = EmbeddedCluster(spec, base_dir=tmp_path)
    with pytest.raises(ProcessError) as err:
        await cluster.start()
    assert str(err.value).startswith("bad exited with status 1 before it was ready; log ")
    assert str(err.value).endswith("bad config: --port")
    assert not cluster.running
    assert not any(p.alive for p in cluster.processes().values())


def _spec(*components: ComponentSpec, links: tuple[LinkSpec, ...] = ()) -> ClusterSpec:
    return ClusterSpec(components=components, links=links)


def _c(name: str, *after: str) -> ComponentSpec:
    return ComponentSpec(name, ComponentKind.SERVICE, lambda a: ["true"], start_after=after)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: _spec(), "a cluster needs at least one component"),
        (lambda: _spec(_c("a"), _c("a")), "duplicate component names: a"),
        (lambda: _spec(_c("client")), "'client' is reserved and cannot name a component"),
        (lambda: _spec(_c("a", "b")), "component 'a' starts after unknown 'b' (components: a)"),
        (lambda: _spec(_c("a", "b"), _c("b", "a")), "start_after has a cycle among: a, b"),
        (
            lambda: _spec(_c("a"), links=(LinkSpec("x", "a"),)),
            "link x->a: unknown source 'x' (components: a, or 'client')",
        ),
        (
            lambda: _spec(_c("a"), links=(LinkSpec("a", "y"),)),
            "link a->y: unknown target 'y' (components: a)",
        ),
        (
            lambda: _spec(_c("a"), links=(LinkSpec("client", "a"), LinkSpec("client", "a"))),
            "duplicate link client->a",
        ),
    ],
)
def test_bad_specs_are_clear_errors(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(ClusterError) as err:
        build()
    assert str(err.value) == message


def test_waves_follow_start_after() -> None:
    spec = _spec(_c("db"), _c("a", "db"), _c("b", "db"), _c("lb", "a", "b"))
    assert spec.waves() == (("db",), ("a", "b"), ("lb",))
