"""Figures of the Docker foundation, printed as a table (the README's are from this script).

    .venv/bin/python docker/measure.py [--runs 5] [--cold]

- dockerd start (median of --runs start/stop cycles, in a root of its own under /tmp);
- images cached: ensure_images when nothing changed;
- compose up --wait of docker-compose.yml to all healthy, from warm images, on ports
  chosen at run time (median of --runs; each run brought down after);
- with --cold: a fresh engine root and cache under /tmp (removed after): the base image
  (debootstrap + import), then each image built with no layer cache, then the same from the
  cached base tarball into another fresh data root (what a new machine's second data root,
  or CI after a data root is lost, pays).

Needs root (it starts its own dockerd) and Debian's docker.io and debootstrap (`./dev docker
start` installs them). Stops what it started.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pytest_operator._docker import DockerEngine, remove_tree
from pytest_operator._images import Images, ensure_images
from pytest_operator._process import free_ports

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"
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


def _row(what: str, seconds: float | list[float]) -> None:
    if isinstance(seconds, list):
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"{what:<64} {statistics.median(seconds):7.2f} s   (runs: {runs})", flush=True)
    else:
        print(f"{what:<64} {seconds:7.2f} s", flush=True)


def _images_rows(label: str, images: Images) -> None:
    for image in (images.base, *images.images):
        _row(f"{label}: {image.name}{'' if image.built else ' (cached)'}", image.seconds)


def _cold(runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="podm-", dir="/tmp"))
    try:
        engine = DockerEngine(root / "a", cache_dir=root / "cache")
        with engine.lease():
            started = time.monotonic()
            images = ensure_images(engine)
            _images_rows("cold (debootstrap, no layer cache)", images)
            _row("cold: all images", time.monotonic() - started)
        second = DockerEngine(root / "b", cache_dir=root / "cache")
        with second.lease():
            started = time.monotonic()
            images = ensure_images(second)
            _images_rows("fresh data root, base from the cached tarball", images)
            _row("fresh data root: all images", time.monotonic() - started)
    finally:
        for name in ("a", "b"):
            DockerEngine(root / name).stop()
        remove_tree(root)


def _compose_up(engine: DockerEngine, images: Images, run: int) -> float:
    env = {n: str(p) for n, p in zip(PORTS, free_ports(len(PORTS)), strict=True)}
    env.update(
        NODE_IMAGE=images.ref("ratelimiter-node"),
        REDIS_IMAGE=images.ref("redis"),
        TOXIPROXY_IMAGE=images.ref("toxiproxy"),
        PROMETHEUS_IMAGE=images.ref("prometheus"),
    )
    project = f"pytest-operator-measure-{os.getpid()}-{run}"
    try:
        started = time.monotonic()
        engine.compose("-f", str(COMPOSE_FILE), "-p", project, "up", "--wait", env=env)
        return time.monotonic() - started
    finally:
        engine.compose("-p", project, "down", "--volumes", "--timeout", "10", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="also the cold builds (~2 min)")
    args = parser.parse_args()
    if args.cold:
        _cold(args.runs)

    scratch = Path(tempfile.mkdtemp(prefix="pods-", dir="/tmp"))
    try:
        timed = DockerEngine(scratch)
        starts = []
        for _ in range(args.runs):
            started = time.monotonic()
            timed.start()
            starts.append(time.monotonic() - started)
            timed.stop()
        _row("dockerd start (its own root; ready on /_ping)", starts)
    finally:
        DockerEngine(scratch).stop()
        remove_tree(scratch)

    engine = DockerEngine()
    with engine.lease():
        ensure_images(engine)  # builds what changed, untimed
        started = time.monotonic()
        images = ensure_images(engine)
        _row("ensure_images, nothing changed", time.monotonic() - started)
        _images_rows("nothing changed", images)
        ups = [_compose_up(engine, images, run) for run in range(args.runs)]
        _row("compose up --wait, warm images, to all healthy", ups)
    print(f"command: {shlex.join(['python', 'docker/measure.py', *sys.argv[1:]])}")


if __name__ == "__main__":
    main()
