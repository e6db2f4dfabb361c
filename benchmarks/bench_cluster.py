"""Embedded cluster start-up: time from ``start()`` until every component is ready.

    .venv/bin/python benchmarks/bench_cluster.py [--runs 7] [--nodes 3] [--prometheus]

Starts the rate limiter cluster (redis-server, toxiproxy-server, N nodes under libfaketime,
a proxy per link; with ``--prometheus`` also a real Prometheus, started after the nodes)
several times and prints the median, min and max. The target is a median of at most 2 s
for 3 nodes (without Prometheus). Stop time is printed too (it includes any SIGKILL
escalation).

A run with errors is refused: the benchmark stops at the first one, says what went
wrong and exits 1 without the summary. Errors are: ``start()`` or ``stop()`` raising (a
component that does not become ready in its time, a process that exits), a process
that is not running once the cluster is ready, a service node whose ``/readyz`` does
not answer 200 through the client's proxy within 5 s of ready (it cannot reach its
datastore through its own proxy), and a process group with a member left after
``stop()``. These checks are not timed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_operator._cluster import EmbeddedCluster
from pytest_operator._topology import ComponentKind
from subjects.ratelimiter.cluster import ratelimiter_cluster_spec

READYZ_WAIT_S = 5.0


class Refused(Exception):
    """A run that cannot be measured: what went wrong, in one message."""


async def one_run(nodes: int, base: Path, prometheus: bool) -> tuple[float, float]:
    cluster = EmbeddedCluster(ratelimiter_cluster_spec(nodes, prometheus=prometheus), base_dir=base)
    try:
        began = time.perf_counter()
        try:
            await cluster.start()
        except Exception as error:
            raise Refused(f"start() failed: {error!r}") from None
        ready = time.perf_counter() - began
        await _check_running(cluster)
    finally:
        pids = {name: proc.pid for name, proc in cluster.processes().items()}
        began = time.perf_counter()
        try:
            await cluster.stop()
        except Exception as error:
            raise Refused(f"stop() failed: {error!r}") from None
        stopped = time.perf_counter() - began
    left = [name for name, pid in pids.items() if pid is not None and _group_alive(pid)]
    if left:
        raise Refused(f"processes left after stop(): {', '.join(left)}")
    return ready, stopped


async def _check_running(cluster: EmbeddedCluster) -> None:
    """Every process runs and every service node reaches its datastore."""
    dead = [
        f"{name} (exit status {proc.returncode})"
        for name, proc in cluster.processes().items()
        if not proc.alive
    ]
    if dead:
        raise Refused(f"not running once ready: {', '.join(dead)}")
    nodes = [c.name for c in cluster.topology().components if c.kind is ComponentKind.SERVICE]
    async with httpx.AsyncClient(timeout=1.0) as client:
        for name in nodes:
            url = cluster.client_url(name, "/readyz")
            deadline = time.monotonic() + READYZ_WAIT_S
            while True:
                try:
                    answer = await client.get(url)
                    seen = f"HTTP {answer.status_code} {answer.text[:200]}"
                    if answer.status_code == 200:
                        break
                except httpx.HTTPError as error:
                    seen = repr(error)
                if time.monotonic() > deadline:
                    raise Refused(f"{name}: {url} answered {seen} for {READYZ_WAIT_S:.0f} s")
                await asyncio.sleep(0.1)


def _group_alive(pid: int) -> bool:
    """Whether any process is left in the process group ``pid`` leads."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label}: median {statistics.median(values):.3f} s, min {min(values):.3f} s, "
        f"max {max(values):.3f} s"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--prometheus", action="store_true", help="add the real Prometheus (an observer)"
    )
    args = parser.parse_args()
    # SIGTERM (a `timeout` wrapper, say) unwinds like Ctrl-C: the cluster is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ready: list[float] = []
    stop: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        # run 0 is the warm-up (file caches, .pyc): checked like the others, not counted
        for i in range(args.runs + 1):
            try:
                r, s = await one_run(args.nodes, Path(tmp), args.prometheus)
            except Refused as refused:
                what = "warm-up run" if i == 0 else f"run {i}"
                print(f"refused: {what}: {refused}", file=sys.stderr)
                print("no figures: a run with errors is not a measurement", flush=True)
                return 1
            if i == 0:
                continue
            ready.append(r)
            stop.append(s)
            print(f"run {i}: ready {r:.3f} s, stop {s:.3f} s", flush=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    what = f"{args.nodes} nodes" + (" + prometheus" if args.prometheus else "")
    print(f"{what}, {args.runs} runs (after one warm-up run); {os.cpu_count()} CPUs, "
          f"load average {load} (other work on the machine slows the nodes' start)")  # fmt: skip
    print(summary("start -> ready", ready))
    print(summary("stop", stop))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
