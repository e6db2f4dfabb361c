"""Fixtures of the rate limiter service tests: a real redis-server and real node processes.

Every process is started in its own process group and stopped through it (os.killpg);
ports are chosen at run time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@dataclass
class RedisServer:
    """A redis-server on a fixed port that a test can kill, pause and start again."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with self.client() as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start")
                time.sleep(0.02)

    def kill(self) -> None:
        """Stop it for good: connections are refused until start()."""
        if self.process is not None:
            _stop_group(self.process, signal.SIGKILL)

    def pause(self) -> None:
        """Freeze it: connections hang until resume()."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """One redis-server for a whole test module (tests there use keys of their own)."""
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class Node:
    node_id: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop_group(self.process, sig)


def _wait_healthy(node: Node) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(
                f"node {node.node_id} exited {node.process.returncode}:\n{node.log()}"
            )
        try:
            if httpx.get(f"{node.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"node {node.node_id} not healthy in {STARTUP_TIMEOUT_S} s:\n{node.log()}")


StartNode = Callable[..., Node]


class NodeStarter:
    """start(node_id, redis_url, **options) starts `python -m ratelimiter_service`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.nodes: list[Node] = []

    def __call__(
        self,
        node_id: str,
        redis_url: str,
        *,
        env: dict[str, str] | None = None,
        **options: str | int,
    ) -> Node:
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "ratelimiter_service",
            "--node-id",
            node_id,
            "--port",
            str(port),
            "--redis-url",
            redis_url,
            "--log-level",
            "warning",
        ]
        for name, value in options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        log_path = self.log_dir / f"{node_id}-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                args,
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("RL_")},
                    **(env or {}),
                },
            )
        node = Node(node_id, port, process, log_path, args)
        self.nodes.append(node)
        _wait_healthy(node)
        return node

    def stop_all(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[StartNode]:
    starter = NodeStarter(tmp_path)
    try:
        yield starter
    finally:
        starter.stop_all()


@pytest.fixture(scope="module")
def module_start_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartNode]:
    starter = NodeStarter(tmp_path_factory.mktemp("nodes"))
    try:
        yield starter
    finally:
        starter.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        yield client
