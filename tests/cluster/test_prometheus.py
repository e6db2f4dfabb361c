"""The optional real Prometheus of the rate limiter's embedded cluster (Debian's package):
it scrapes every node directly, stays out of the topology, comes back with its generated
config after a wipe, and leaves no process or port behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from pytest_operator._cluster import (
    Address,
    Addresses,
    ClusterError,
    ClusterSpec,
    ComponentSpec,
    EmbeddedCluster,
    LinkSpec,
    http_status,
)
from pytest_operator._process import RunDirectory, port_is_open, process_start_time
from pytest_operator._topology import ComponentKind
from subjects.ratelimiter.adapter import RateLimiterSubject
from subjects.ratelimiter.cluster import (
    PROMETHEUS,
    PROMETHEUS_CONFIG,
    find_prometheus,
    node_names,
    prometheus_config,
    ratelimiter_cluster_spec,
)

from .conftest import redis_command

NODES = node_names(3)
ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0  # generous: a loaded machine; Prometheus applies new targets every 5 s

needs_prometheus = pytest.mark.skipif(
    shutil.which(PROMETHEUS) is None,
    reason="prometheus is not installed: apt-get install prometheus (./dev test installs it)",
)


# --- the spec (no processes) ------------------------------------------------------------


def test_prometheus_is_an_observer_started_after_the_nodes() -> None:
    spec = ratelimiter_cluster_spec(3, prometheus=True)
    prom = spec.component(PROMETHEUS)
    assert prom.observer
    assert set(prom.start_after) == set(NODES)
    assert spec.waves()[-1] == (PROMETHEUS,)
    assert all(PROMETHEUS not in (lk.source, lk.target) for lk in spec.links)
    assert PROMETHEUS not in ratelimiter_cluster_spec(3).component_names()


def test_the_subject_option_adds_prometheus() -> None:
    subject = RateLimiterSubject()
    assert (
        PROMETHEUS
        in subject.embedded_spec(subject.configure(3, {"prometheus": "1"})).component_names()
    )
    assert PROMETHEUS not in subject.embedded_spec(subject.configure(3, {})).component_names()
    with pytest.raises(ValueError) as info:
        subject.configure(3, {"prometheus": "yes"})
    assert str(info.value) == "ratelimiter: prometheus=yes: invalid value; valid values: 0, 1"


class _FixedAddresses:
    def port(self, name: str) -> int:
        return 9000 + NODES.index(name)

    def address(self, name: str) -> Address:
        return Address("127.0.0.1", self.port(name))

    def via(self, source: str, target: str) -> Address:
        raise AssertionError("Prometheus scrapes the nodes directly, never through a proxy")

    def data_dir(self, name: str) -> Path:
        raise AssertionError("the config does not need a data dir")


def test_a_missing_binary_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError) as info:
        find_prometheus()
    assert str(info.value) == (
        "prometheus was asked for but is not on PATH: apt-get install prometheus "
        "(./dev test installs it)"
    )


def test_the_config_scrapes_every_node_directly_each_second() -> None:
    config = json.loads(prometheus_config(_FixedAddresses(), NODES))
    assert config["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s"}
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [
        {"targets": ["127.0.0.1:9000"], "labels": {"node": "node-1"}},
        {"targets": ["127.0.0.1:9001"], "labels": {"node": "node-2"}},
        {"targets": ["127.0.0.1:9002"], "labels": {"node": "node-3"}},
    ]


def _redis() -> ComponentSpec:
    return ComponentSpec("redis", ComponentKind.DATASTORE, redis_command)


def _watcher(files: Callable[[Addresses], Mapping[str, str]] | None = None) -> ComponentSpec:
    return ComponentSpec(
        "watcher",
        ComponentKind.SERVICE,
        lambda a: [sys.executable, "-c", "import time; time.sleep(60)"],
        files=files,
        observer=True,
    )


def test_an_observer_has_no_links() -> None:
    with pytest.raises(ClusterError) as info:
        ClusterSpec((_redis(), _watcher()), (LinkSpec("watcher", "redis"),))
    assert str(info.value) == (
        "link watcher->redis: 'watcher' is an observer, not part of the system under test, "
        "and has no links"
    )


async def test_a_file_outside_the_data_dir_is_refused(tmp_path: Path) -> None:
    spec = ClusterSpec((_redis(), _watcher(files=lambda a: {"../escape.yml": "x"})))
    with pytest.raises(ClusterError) as info:
        await EmbeddedCluster(spec, base_dir=tmp_path).start()
    assert str(info.value) == (
        "component 'watcher': file '../escape.yml' must be a relative path inside its data dir"
    )
    assert not (tmp_path / "escape.yml").exists()


# --- the real thing ---------------------------------------------------------------------


async def _query(client: httpx.AsyncClient, base: str, promql: str) -> list[dict[str, object]]:
    response = await client.get(f"{base}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def _node(series: dict[str, object]) -> str:
    metric = series["metric"]
    assert isinstance(metric, dict), series
    return str(metric["node"])


def _value(series: dict[str, object]) -> str:
    value = series["value"]  # [timestamp, "value"]
    assert isinstance(value, list), series
    return str(value[1])


async def _wait_for(
    client: httpx.AsyncClient, base: str, promql: str, want: set[str]
) -> dict[str, str]:
    """Poll ``promql`` until its series cover the nodes in ``want``; node -> value."""
    deadline = time.monotonic() + WAIT_S
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        result = await _query(client, base, promql)
        seen = {_node(r): _value(r) for r in result}
        if want <= {node for node, value in seen.items() if value != "0"}:
            return seen
        await asyncio.sleep(0.5)
    raise AssertionError(f"{promql}: wanted {sorted(want)} within {WAIT_S:.0f}s, last {seen}")


@needs_prometheus
async def test_prometheus_scrapes_every_node_and_stops_with_the_cluster(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(ratelimiter_cluster_spec(3, prometheus=True), base_dir=tmp_path)
    await cluster.start()
    try:
        procs = cluster.processes()
        assert sorted(procs) == sorted([*NODES, PROMETHEUS, "redis", "toxiproxy"])
        pids = {name: p.pid for name, p in procs.items()}
        starts = {name: process_start_time(pid) for name, pid in pids.items() if pid}
        prom = cluster.address(PROMETHEUS)
        ports = [cluster.address(n).port for n in cluster.component_names()]
        ports += [cluster.proxy_address(lk.source, lk.target).port for lk in cluster.spec.links]
        ports.append(int(cluster.toxiproxy.base_url.rsplit(":", 1)[1]))
        assert all(port_is_open(p) for p in ports)
        assert port_is_open(prom.port)
        assert await http_status(prom, "/-/ready") == 200

        names = {c.name for c in cluster.topology().components}
        assert names == {*NODES, "redis", "client"}  # the observer is no component

        data = cluster.run_dir.path / f"{PROMETHEUS}.data"
        assert (data / PROMETHEUS_CONFIG).is_file()
        assert (data / "tsdb").is_dir()

        base = prom.url()
        async with httpx.AsyncClient(timeout=5.0) as client:
            up = await _wait_for(client, base, "up", set(NODES))
            assert set(up) == set(NODES)

            for node in NODES:  # straight to each node: only Prometheus's view is tested
                response = await client.post(
                    cluster.address(node).url(path="/check"), json={"key": f"prom-{node}"}
                )
                assert response.status_code == 200, response.text
            counted = await _wait_for(
                client, base, "sum by (node) (ratelimiter_requests_total)", set(NODES)
            )
            assert all(float(v) >= 1 for v in counted.values()), counted

            # A wiped data dir gets the generated config back: Prometheus starts again.
            await cluster.restart(PROMETHEUS, wipe=True)
            assert (data / PROMETHEUS_CONFIG).is_file()
            assert await http_status(prom, "/-/ready") == 200
            await _wait_for(client, base, "up", set(NODES))
            pids[PROMETHEUS] = cluster.process(PROMETHEUS).pid
            starts[PROMETHEUS] = process_start_time(pids[PROMETHEUS] or 0)
    finally:
        await cluster.stop()

    survivors = [n for n, pid in pids.items() if pid and process_start_time(pid) == starts[n]]
    assert survivors == []
    assert [p for p in ports if port_is_open(p)] == []


# A driver that starts the cluster with Prometheus, says what it started, and hangs.
DRIVER = """
import asyncio, json, sys
from pytest_operator._cluster import EmbeddedCluster
from subjects.ratelimiter.cluster import ratelimiter_cluster_spec

async def main(base):
    spec = ratelimiter_cluster_spec(2, prometheus=True)
    async with EmbeddedCluster(spec, base_dir=base) as cluster:
        pids = {name: p.pid for name, p in cluster.processes().items()}
        port = cluster.address("prometheus").port
        print(json.dumps({"pids": pids, "port": port}), flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


@needs_prometheus
def test_a_killed_driver_leaves_no_prometheus_after_the_next_start(tmp_path: Path) -> None:
    base = tmp_path / "runs"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    pids: dict[str, int] = {}
    starts: dict[str, int | None] = {}
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        if not line:
            _, err = driver.communicate(timeout=30)
            raise AssertionError(f"driver failed: {err}")
        info = json.loads(line)
        pids = {name: int(pid) for name, pid in info["pids"].items()}
        starts = {name: process_start_time(pid) for name, pid in pids.items()}
        port = int(info["port"])
        assert PROMETHEUS in pids
        assert port_is_open(port)

        os.killpg(driver.pid, signal.SIGKILL)  # the driver's own group only
        driver.communicate(timeout=10)
        time.sleep(0.5)
        assert process_start_time(pids[PROMETHEUS]) == starts[PROMETHEUS]  # orphaned, alive

        RunDirectory.create(base)  # the next start cleans the dead run up
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (_alive(pids, starts) or port_is_open(port)):
            time.sleep(0.05)
        assert _alive(pids, starts) == []
        assert not port_is_open(port)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        for name in _alive(pids, starts):
            os.killpg(pids[name], signal.SIGKILL)


def _alive(pids: dict[str, int], starts: dict[str, int | None]) -> list[str]:
    """Names whose process is still the one the driver started (same PID and start time)."""
    return [n for n, pid in pids.items() if starts[n] and process_start_time(pid) == starts[n]]
