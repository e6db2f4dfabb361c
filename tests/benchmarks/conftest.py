"""Running a benchmark as its own process, and small real subjects that fail.

Every process is started in its own process group and stopped through it (os.killpg);
ports are chosen at run time. A benchmark that runs over its time gets SIGTERM (each
turns it into an orderly exit that stops what it started), then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


@dataclass(frozen=True, slots=True)
class Finished:
    """A benchmark's exit status and output."""

    returncode: int
    stdout: str
    stderr: str


def run_benchmark(
    script: str, *args: str, timeout: float, env: dict[str, str] | None = None
) -> Finished:
    """Run ``benchmarks/<script>`` with ``args``; fail the test past ``timeout`` seconds."""
    process = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={
            **os.environ,
            "PATH": f"{ROOT / '.bin'}{os.pathsep}{os.environ['PATH']}",
            **(env or {}),
        },
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(process, grace=60)
        stdout, stderr = process.communicate(timeout=10)
        pytest.fail(f"{script} ran over {timeout} s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    finally:
        _stop_group(process, grace=10)
    return Finished(process.returncode, stdout, stderr)


def _stop_group(process: subprocess.Popen[str], grace: float) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(command: list[str], port: int) -> Iterator[str]:
    """Start ``command`` (an HTTP server on ``port``), wait for /healthz, yield its URL."""
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"{command} exited with {process.returncode}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{url}/healthz did not answer in 30 s"
            time.sleep(0.05)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def unreachable_redis_url() -> str:
    """A Redis URL on a loopback port nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def baseline_answering_500(unreachable_redis_url: str) -> Iterator[str]:
    """The naive baseline, its Redis unreachable: every /check is a 500."""
    port = free_port()
    command = [sys.executable, str(BENCHMARKS / "naive_baseline.py"), "--port", str(port),
               "--redis-url", unreachable_redis_url]  # fmt: skip
    yield from _serve(command, port)


@pytest.fixture
def degraded_node(unreachable_redis_url: str) -> Iterator[str]:
    """A real rate limiter node whose Redis is unreachable (fail_open: degraded answers)."""
    port = free_port()
    command = [sys.executable, "-m", "ratelimiter_service", "--node-id", "bench", "--port",
               str(port), "--redis-url", unreachable_redis_url, "--policy", "fail_open",
               "--log-level", "warning"]  # fmt: skip
    yield from _serve(command, port)
