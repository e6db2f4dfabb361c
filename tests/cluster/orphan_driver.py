"""Drives a stand-in cluster for the orphan tests: ``python orphan_driver.py BASE MODE``.

Prints one JSON line (pids, ports, run dir) once the cluster is ready, then by MODE:
``normal`` leaves the ``async with`` and ``raise`` raises inside it, both once a line
arrives on stdin; ``hang`` waits to be interrupted (SIGINT) or killed (SIGKILL).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pytest_operator._cluster import EmbeddedCluster
from tests.cluster.conftest import standin_spec


def describe(cluster: EmbeddedCluster) -> str:
    ports = [cluster.address(n).port for n in cluster.component_names()]
    ports += [cluster.proxy_address(lk.source, lk.target).port for lk in cluster.spec.links]
    ports.append(int(cluster.toxiproxy.base_url.rsplit(":", 1)[1]))
    pids = {name: proc.pid for name, proc in cluster.processes().items()}
    return json.dumps({"pids": pids, "ports": ports, "run_dir": str(cluster.run_dir.path)})


async def main(base: str, mode: str) -> None:
    async with EmbeddedCluster(standin_spec(2), base_dir=base) as cluster:
        print(describe(cluster), flush=True)
        if mode in ("normal", "raise"):
            await asyncio.to_thread(sys.stdin.readline)
        if mode == "raise":
            raise RuntimeError("the test failed")
        if mode == "hang":
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
