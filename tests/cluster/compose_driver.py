"""Drives a compose cluster for the compose cleanup tests:
``python compose_driver.py BASE MODE``.

Starts the rate limiter's spec (2 nodes) on the compose backend, prints one JSON line once
it is ready (project, run dir, every port), then by MODE: ``normal`` leaves the ``async
with`` once a line arrives on stdin; ``hang`` waits to be interrupted (SIGINT) or killed
(SIGKILL). MODE ``starting`` prints the line as soon as the compose file exists, before any
component is ready, and keeps going (the moment a Ctrl-C during the start aims at).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pytest_operator._compose import ComposeCluster
from subjects.ratelimiter.cluster import ratelimiter_cluster_spec


def describe(cluster: ComposeCluster) -> str:
    ports = [cluster.address(n).port for n in cluster.component_names()]
    ports += [cluster.proxy_address(lk.source, lk.target).port for lk in cluster.spec.links]
    ports.append(int(cluster.toxiproxy.base_url.rsplit(":", 1)[1]))
    return json.dumps(
        {"project": cluster.project, "run_dir": str(cluster.run_dir.path), "ports": ports}
    )


async def announce_start(cluster: ComposeCluster) -> None:
    """Print the project as soon as the first ``up`` has been asked for."""
    for _ in range(6000):
        if cluster.project is not None and cluster._up:
            print(json.dumps({"project": cluster.project}), flush=True)
            return
        await asyncio.sleep(0.005)


async def main(base: str, mode: str) -> None:
    cluster = ComposeCluster(ratelimiter_cluster_spec(2), base_dir=base)
    if mode == "starting":
        watcher = asyncio.create_task(announce_start(cluster))
        async with cluster:
            await watcher
            await asyncio.sleep(3600)
    async with cluster:
        print(describe(cluster), flush=True)
        if mode == "normal":
            await asyncio.to_thread(sys.stdin.readline)
        if mode == "hang":
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
