"""Cluster start-up: time from ``start()`` until every component is ready.

    .venv/bin/python benchmarks/bench_cluster.py [--runs 7] [--nodes 3] [--prometheus]
    .venv/bin/python benchmarks/bench_cluster.py --subject etcd [--nodes 5]
    .venv/bin/python benchmarks/bench_cluster.py --cluster compose [--runs 5]

Starts a subject's embedded cluster several times and prints the median, min and max.
``ratelimiter`` (the default): redis-server, toxiproxy-server, N nodes under libfaketime, a
proxy per link; with ``--prometheus`` also a real Prometheus, started after the nodes.
``etcd``: N etcd members on their own loopback addresses, each as its own uid with its SNAT
rule, a client proxy per member; ready means every member's ``/health`` says true (a leader
is elected and a quorum answers). The target is a median of at most 2 s for 3 nodes (without
Prometheus), for both subjects. Stop time is printed too (it includes any SIGKILL escalation).

``--cluster compose`` measures the compose backend instead: the same spec in containers of
our own dockerd (or ``DOCKER_HOST``'s), from warm images (the warm-up run builds any image
that is missing or changed, and is not counted); ready includes the image check, the compose
file, every ``compose up`` and the readiness of every component; stop is ``compose down``.
Its target is a median of at most 10 s.

A run with errors is refused: the benchmark stops at the first one, says what went
wrong and exits 1 without the summary. Errors are: ``start()`` or ``stop()`` raising (a
component that does not become ready in its time, a process that exits), a process
that is not running once the cluster is ready, a subject that does not observe itself
healthy within 5 s of ready (every component answers the monitor and says it is ready, no
link down: a rate limiter node that cannot reach its datastore through its own proxy, an etcd
member that cannot reach its peers), and a process group (a container, on compose) left after
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest

from pytest_operator import _registry
from pytest_operator._backend import Cluster
from pytest_operator._cluster import ClusterSpec
from pytest_operator._history import History
from pytest_operator._monitor import NotHealthy, wait_healthy
from pytest_operator._process import ProcessHandle
from pytest_operator._subject import Subject, SubjectConfig

HEALTHY_WAIT_S = 5.0


class Refused(Exception):
    """A run that cannot be measured: what went wrong, in one message."""


def new_cluster(backend: str, spec: ClusterSpec, base: Path) -> Cluster[ProcessHandle]:
    if backend == "compose":
        from pytest_operator._compose import ComposeCluster

        return ComposeCluster(spec, base_dir=base)
    from pytest_operator._embedded import EmbeddedCluster

    return EmbeddedCluster(spec, base_dir=base)


async def one_run(
    subject: Subject, config: SubjectConfig, base: Path, backend: str
) -> tuple[float, float]:
    cluster = new_cluster(backend, subject.embedded_spec(config), base)
    try:
        began = time.perf_counter()
        try:
            await cluster.start()
        except Exception as error:
            raise Refused(f"start() failed: {error!r}") from None
        ready = time.perf_counter() - began
        await _check_running(cluster, subject, config)
    finally:
        left_after_stop = _leftovers(cluster)
        began = time.perf_counter()
        try:
            await cluster.stop()
        except Exception as error:
            raise Refused(f"stop() failed: {error!r}") from None
        stopped = time.perf_counter() - began
    left = left_after_stop()
    if left:
        raise Refused(f"left after stop(): {', '.join(left)}")
    return ready, stopped


def _leftovers(cluster: Cluster[ProcessHandle]) -> Callable[[], list[str]]:
    """What to look for once the cluster is stopped: its process groups, or the containers
    of its compose project."""
    from pytest_operator._compose import ComposeCluster

    if isinstance(cluster, ComposeCluster):
        project, socket = cluster.project, cluster.api.socket if cluster.running else None

        def containers() -> list[str]:
            from pytest_operator._containers import PROJECT_LABEL, DockerApi

            if project is None or socket is None:
                return []
            api = DockerApi(socket)
            try:
                return [str(c["Names"][0]) for c in api.containers(f"{PROJECT_LABEL}={project}")]
            finally:
                api.close()

        return containers
    pids = {name: getattr(proc, "pid", None) for name, proc in cluster.processes().items()}
    return lambda: [n for n, pid in pids.items() if pid is not None and _group_alive(pid)]


async def _check_running(
    cluster: Cluster[ProcessHandle], subject: Subject, config: SubjectConfig
) -> None:
    """Every process runs and the subject observes itself healthy."""
    dead = [
        f"{name} ({proc.log_tail(3)!r})"
        for name, proc in cluster.processes().items()
        if not proc.alive
    ]
    if dead:
        raise Refused(f"not running once ready: {', '.join(dead)}")
    session = subject.open(cluster, config, History())
    try:
        await wait_healthy(session.observe, timeout=HEALTHY_WAIT_S)
    except NotHealthy as error:
        raise Refused(str(error)) from None
    finally:
        await session.aclose()


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
    parser.add_argument("--subject", default="ratelimiter", help="an installed subject")
    parser.add_argument(
        "--cluster", choices=("embedded", "compose"), default="embedded", help="the backend"
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument(
        "--prometheus", action="store_true", help="add the real Prometheus (an observer)"
    )
    args = parser.parse_args()
    if args.prometheus and args.subject != "ratelimiter":
        parser.error("--prometheus is an option of the ratelimiter subject")
    try:
        subject = _registry.load(args.subject)
        config = subject.configure(args.nodes, {"prometheus": "1"} if args.prometheus else {})
        subject.embedded_spec(config)  # a node count the subject cannot run is an error here
    except (pytest.UsageError, ValueError) as error:
        parser.error(str(error))
    if args.cluster == "compose":
        from pytest_operator._compose import engine_problem

        problem = engine_problem()
        if problem is not None:
            parser.error(f"--cluster compose: {problem}")
    # SIGTERM (a `timeout` wrapper, say) unwinds like Ctrl-C: the cluster is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ready: list[float] = []
    stop: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        os.chmod(tmp, 0o711)  # mesh members run as their own uids and must reach their data
        # run 0 is the warm-up (file caches, .pyc): checked like the others, not counted
        for i in range(args.runs + 1):
            try:
                r, s = await one_run(subject, config, Path(tmp), args.cluster)
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
    if args.subject != "ratelimiter":
        what = f"{args.subject}: {what}"
    if args.cluster == "compose":
        what = f"compose backend: {what}"
    print(f"{what}, {args.runs} runs (after one warm-up run); {os.cpu_count()} CPUs, "
          f"load average {load} (other work on the machine slows the nodes' start)")  # fmt: skip
    print(summary("start -> ready", ready))
    print(summary("stop", stop))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
