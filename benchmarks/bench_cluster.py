"""Embedded cluster start-up: time from ``start()`` until every component is ready.

    .venv/bin/python benchmarks/bench_cluster.py [--runs 7] [--nodes 3] [--prometheus]

Starts the rate limiter cluster (redis-server, toxiproxy-server, N nodes under libfaketime,
a proxy per link; with ``--prometheus`` also a real Prometheus, started after the nodes)
several times and prints the median, min and max. The target is a median of at most 2 s
for 3 nodes (without Prometheus). Stop time is printed too (it includes any SIGKILL
escalation).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_operator._cluster import EmbeddedCluster
from subjects.ratelimiter.cluster import ratelimiter_cluster_spec


async def one_run(nodes: int, base: Path, prometheus: bool) -> tuple[float, float]:
    cluster = EmbeddedCluster(ratelimiter_cluster_spec(nodes, prometheus=prometheus), base_dir=base)
    began = time.perf_counter()
    await cluster.start()
    ready = time.perf_counter() - began
    began = time.perf_counter()
    await cluster.stop()
    return ready, time.perf_counter() - began


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(values):.3f} s, min {min(values):.3f} s, "
        f"max {max(values):.3f} s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--prometheus", action="store_true", help="add the real Prometheus (an observer)"
    )
    args = parser.parse_args()
    ready: list[float] = []
    stop: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        await one_run(args.nodes, Path(tmp), args.prometheus)  # warm-up: file caches, .pyc
        for i in range(args.runs):
            r, s = await one_run(args.nodes, Path(tmp), args.prometheus)
            ready.append(r)
            stop.append(s)
            print(f"run {i + 1}: ready {r:.3f} s, stop {s:.3f} s", flush=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    what = f"{args.nodes} nodes" + (" + prometheus" if args.prometheus else "")
    print(f"{what}, {args.runs} runs (after one warm-up run); {os.cpu_count()} CPUs, "
          f"load average {load} (other work on the machine slows the nodes' start)")  # fmt: skip
    print(summary("start -> ready", ready))
    print(summary("stop", stop))


if __name__ == "__main__":
    asyncio.run(main())
