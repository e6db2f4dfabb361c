"""Drives a stand-in mesh for the netfilter tests: ``python mesh_driver.py BASE MODE``.

Starts a two-member mesh (tests/cluster/mesh.py), cuts m-1 from m-2, prints one JSON line
(the run's rule comment, the member pids and their start times), then by MODE: ``hang``
waits inside ``isolate("m-1")`` to be interrupted (SIGINT) or killed (SIGKILL); ``exit``
leaves the cut in place (applied, never healed) and the cluster running, and returns from
main once a line arrives on stdin: only the atexit hook removes anything.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pytest_operator._chaos import isolate
from pytest_operator._cluster import EmbeddedCluster
from pytest_operator._process import process_start_time
from tests.cluster.mesh import mesh_spec


def describe(cluster: EmbeddedCluster) -> str:
    pids = {name: proc.pid for name, proc in cluster.processes().items()}
    starts = {name: process_start_time(pid) for name, pid in pids.items() if pid is not None}
    return json.dumps(
        {
            "comment": cluster.netfilter.comment,
            "pids": pids,
            "starts": starts,
            "run_dir": str(cluster.run_dir.path),
        }
    )


async def main(base: str, mode: str) -> None:
    if mode == "hang":
        async with EmbeddedCluster(mesh_spec(2), base_dir=base) as cluster:
            async with isolate("m-1").inject(cluster):
                print(describe(cluster), flush=True)
                await asyncio.sleep(3600)
    elif mode == "exit":
        cluster = EmbeddedCluster(mesh_spec(2), base_dir=base)
        await cluster.start()
        bound = await isolate("m-1").bind(cluster)
        await bound._apply(cluster)
        print(describe(cluster), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
