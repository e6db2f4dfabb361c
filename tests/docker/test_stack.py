"""The top-level docker-compose.yml, as a person runs it: ``compose up --wait`` (through
pytest-docker's fixtures machinery) on ports chosen at run time, checks through the nodes,
Toxiproxy and Prometheus on 127.0.0.1, then ``down``: no container, volume or network of
the project left."""

from __future__ import annotations

import json
import os
import shlex
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pytest_docker.plugin import get_docker_services

from pytest_operator._docker import DockerEngine, compose_command
from pytest_operator._images import Images
from pytest_operator._process import free_ports

pytestmark = pytest.mark.slow

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
PORTS = (
    "REDIS_PORT",
    "TOXIPROXY_PORT",
    "NODE1_PORT",
    "NODE2_PORT",
    "NODE3_PORT",
    "NODE1_REDIS_PORT",
    "NODE2_REDIS_PORT",
    "NODE3_REDIS_PORT",
    "PROMETHEUS_PORT",
)
NODES = ("node-1", "node-2", "node-3")


def _http(method: str, url: str, body: Mapping[str, object] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.loads(reply.read())


def _listening(port: int) -> set[str]:
    """The local addresses on which something listens on TCP ``port`` (from /proc)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hexport = fields[1].split(":")
        if fields[3] == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def _project_resources(engine: DockerEngine, project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    return {
        kind: engine.docker(*command, "--filter", label, "-q").stdout.split()
        for kind, command in (
            ("containers", ("ps", "-a")),
            ("volumes", ("volume", "ls")),
            ("networks", ("network", "ls")),
        )
    }


def test_the_stack_comes_up_answers_on_loopback_and_goes_away(
    engine: DockerEngine, images: Images
) -> None:
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    env = {name: str(port) for name, port in ports.items()}
    env.update(
        NODE_IMAGE=images.ref("ratelimiter-node"),
        REDIS_IMAGE=images.ref("redis"),
        TOXIPROXY_IMAGE=images.ref("toxiproxy"),
        PROMETHEUS_IMAGE=images.ref("prometheus"),
        DOCKER_HOST=engine.host,
        DOCKER_CONFIG=engine.env()["DOCKER_CONFIG"],
    )
    # pytest-docker runs its command through a shell: the environment goes in front
    command = " ".join(
        ["env", *(shlex.quote(f"{k}={v}") for k, v in env.items())]
        + [shlex.quote(a) for a in compose_command()]
    )
    project = f"pytest-operator-test-{os.getpid()}"
    started = time.monotonic()
    try:
        with get_docker_services(
            command,
            str(COMPOSE_FILE),
            project,
            ["up --wait --wait-timeout 180 --quiet-pull"],
            ["down --volumes --timeout 10"],
        ):
            ready = time.monotonic() - started
            print(f"compose up --wait: ready in {ready:.1f} s")
            node = {n: f"http://127.0.0.1:{ports[f'NODE{n[-1]}_PORT']}" for n in NODES}
            # one key, three nodes: the counter is shared through Redis (via Toxiproxy)
            key = f"stack-{os.getpid()}"
            seen = [_http("POST", f"{node[n]}/check", {"key": key, "cost": 1}) for n in NODES]
            assert [d["node"] for d in seen] == list(NODES)
            assert all(d["allowed"] and d["mode"] == "normal" for d in seen), seen
            limit = seen[0]["limit"]
            assert [d["remaining"] for d in seen] == [limit - 1, limit - 2, limit - 3], seen
            # the registry holds the three nodes at the addresses they were given
            registry = _http("GET", f"{node['node-2']}/api/nodes")["nodes"]
            assert {(e["id"], e["address"], e["state"]) for e in registry} == {
                (n, node[n], "Up") for n in NODES
            }
            # each node reaches Redis through its own proxy
            proxies = _http("GET", f"http://127.0.0.1:{ports['TOXIPROXY_PORT']}/proxies")
            assert {
                name: (p["listen"], p["upstream"], p["enabled"]) for name, p in proxies.items()
            } == {
                f"{n}->redis": (
                    f"127.0.0.1:{ports[f'NODE{n[-1]}_REDIS_PORT']}",
                    f"127.0.0.1:{ports['REDIS_PORT']}",
                    True,
                )
                for n in NODES
            }
            # Prometheus scrapes every node (once per second: bounded wait for the first)
            targets_url = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}/api/v1/targets"
            deadline = time.monotonic() + 30
            while True:
                active = _http("GET", targets_url)["data"]["activeTargets"]
                health = {t["labels"]["node"]: t["health"] for t in active}
                if health == dict.fromkeys(NODES, "up") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert health == dict.fromkeys(NODES, "up")
            # everything listens on 127.0.0.1 only
            for name, port in ports.items():
                assert _listening(port) == {"127.0.0.1"}, name
    finally:
        # also when `up` failed (pytest-docker cleans up only after a successful setup)
        engine.compose("-p", project, "down", "--volumes", "--timeout", "10", check=False)
    assert _project_resources(engine, project) == {"containers": [], "volumes": [], "networks": []}
    for name, port in ports.items():
        assert _listening(port) == set(), f"{name} still listens after down"
