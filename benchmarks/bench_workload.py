"""Benchmark: can one Python process offer >= 3,000 requests/s on schedule?

Runs the open-loop workload with the rate limiter's client against a fast
stand-in node (a minimal HTTP/1.1 server answering ``POST /check`` in another
process, so the two do not share a core's event loop) under three target
names, round-robin, several runs, and
prints per run the achieved send rate, answered rate and send lateness
(actual send minus schedule) p50/p99/max, then the medians.

    .venv/bin/python benchmarks/bench_workload.py                 # 3,000/s, 5 s, 5 runs
    .venv/bin/python benchmarks/bench_workload.py --nodes 3       # one stand-in per target
    .venv/bin/python benchmarks/bench_workload.py --rate 4000 --runs 3 --no-uvloop
    .venv/bin/python benchmarks/bench_workload.py --client httpx  # the httpx comparison
    .venv/bin/python benchmarks/bench_workload.py --url node-1=http://127.0.0.1:8001

Target: achieved rate >= 3,000/s with lateness p99 <= 5 ms.

A run with errors is refused: the benchmark stops at the first one, prints the errors by
kind and exits 1 without the medians or the verdict. An error is a request whose outcome
is ``error`` (an HTTP status other than 200, a socket error, an unreadable reply) or
``timeout`` (no answer in 2 s), as the client records them; a denial (``rejected``, a
real node's 200 with "allowed": false) and a degraded node's decision are answers.
Requests the generator dropped rather than send late are not errors but the measure
itself: they lower the sent rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pytest_operator._history import History, Outcome
from pytest_operator._workload import Call, Response, Workload, steady, uniform
from subjects.ratelimiter.client import RateLimiterClient

_REPLY_BODY = (
    b'{"allowed":true,"limit":100,"remaining":99,"retry_after_ms":0,"node":"stub","mode":"normal"}'
)
_REPLY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(_REPLY_BODY),
    _REPLY_BODY,
)


class _StubProtocol(asyncio.Protocol):
    """Answers every request that has arrived in full with a fixed 200 JSON reply."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport writes

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length :]
            replies += 1
        if replies and self.transport is not None:
            self.transport.write(_REPLY * replies)


def serve(port: int) -> None:
    """Run the stand-in node on 127.0.0.1:port until killed."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_StubProtocol, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def stub_nodes(count: int) -> Iterator[dict[str, str]]:
    """Start ``count`` stand-in nodes, each in its own process group; kill them after."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for i in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve", str(port)], start_new_session=True
                )
            )
            urls[f"node-{i + 1}"] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            _wait_port(int(url.rsplit(":", 1)[1]))
        yield urls
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class HttpxClient:
    """The same requester through httpx, for comparison."""

    def __init__(self, urls: Mapping[str, str], timeout: float) -> None:
        import httpx

        self._urls = dict(urls)
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits)

    async def __call__(self, target: str, call: Call) -> Response:
        reply = await self._client.post(f"{self._urls[target]}/check", json={"key": call.key})
        if reply.status_code != 200:
            return Response(Outcome.ERROR, f"HTTP {reply.status_code}")
        return Response(Outcome.OK if reply.json()["allowed"] else Outcome.REJECTED)

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class RunResult:
    offered: float
    sent_rate: float
    answered_rate: float
    errors: int
    dropped: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us: float  # this process's CPU time per request sent
    error_kinds: dict[str, int] = field(default_factory=dict)

    def describe_errors(self) -> str:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.error_kinds.items()))
        return f"{self.errors} errors ({kinds})"


def _error_kind(detail: str) -> str:
    """An error's detail without what varies per request: the status line of an HTTP
    error, the exception's name of a transport error."""
    return re.split(r":" if detail.startswith("HTTP") else r"\(", detail, maxsplit=1)[0][:80]


async def one_run(urls: Mapping[str, str], rate: float, duration: float, client: str) -> RunResult:
    requester = (
        HttpxClient(urls, timeout=2.0)
        if client == "httpx"
        else RateLimiterClient(urls, timeout=2.0)
    )
    history = History()
    workload = Workload(requester, list(urls), history, timeout=2.0)
    async with workload:
        cpu = time.process_time()
        await workload.run(steady(rate, duration), uniform(100))
        cpu = time.process_time() - cpu
    ops = history.snapshot()
    answered = [op for op in ops if op.outcome in (Outcome.OK, Outcome.REJECTED)]
    kinds = Counter(
        f"{op.outcome}: {_error_kind(op.detail or '')}"
        for op in ops
        if op.outcome not in (Outcome.OK, Outcome.REJECTED)
    )
    first = min(op.send for op in ops)
    last = max(op.send for op in ops)
    stats = workload.lateness()
    return RunResult(
        offered=rate,
        sent_rate=(len(ops) - 1) / (last - first),
        answered_rate=len(answered) / duration,
        errors=len(ops) - len(answered),
        dropped=stats.dropped,
        p50_ms=stats.p50 * 1000,
        p99_ms=stats.p99 * 1000,
        max_ms=stats.max * 1000,
        cpu_us=cpu / max(1, len(ops)) * 1e6,
        error_kinds=dict(kinds),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=3000.0, help="requests/s offered")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="stand-in node processes; the three targets share them (default 1: on two cores"
        " every extra process takes CPU from the generator)",
    )
    parser.add_argument("--client", choices=("own", "httpx"), default="own")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")
    parser.add_argument(
        "--url", action="append", default=[], help="NAME=URL of a real node (repeatable)"
    )
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return 0
    # SIGTERM (a `timeout` wrapper, say) unwinds like Ctrl-C, so the stand-in nodes are killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    use_uvloop = not args.no_uvloop
    if use_uvloop:
        import uvloop

        uvloop.install()
    loop_name = "uvloop" if use_uvloop else "asyncio"
    print(
        f"workload benchmark: {args.rate:.0f} req/s offered, {args.duration} s x {args.runs} runs,"
        f" client={args.client}, loop={loop_name}"
    )
    with contextlib.ExitStack() as stack:
        if args.url:
            urls = dict(item.split("=", 1) for item in args.url)
        else:
            started = list(stack.enter_context(stub_nodes(args.nodes)).values())
            urls = {f"node-{i + 1}": started[i % len(started)] for i in range(3)}
        print(f"targets: {', '.join(f'{k}={v}' for k, v in urls.items())}")
        results: list[RunResult] = []
        for run in range(args.runs):
            result = asyncio.run(one_run(urls, args.rate, args.duration, args.client))
            if result.errors:
                print(f"refused: run {run + 1}: {result.describe_errors()}", file=sys.stderr)
                print("no figures: a run with errors is not a measurement", flush=True)
                return 1
            results.append(result)
            print(
                f"run {run + 1}: sent {result.sent_rate:7.0f}/s"
                f"  answered {result.answered_rate:7.0f}/s"
                f"  errors {result.errors}  dropped {result.dropped}"
                f"  lateness p50 {result.p50_ms:5.2f} ms  p99 {result.p99_ms:5.2f} ms"
                f"  max {result.max_ms:6.2f} ms  cpu {result.cpu_us:.0f} us/req"
            )
    med = statistics.median
    sent = med(r.sent_rate for r in results)
    p99 = med(r.p99_ms for r in results)
    print(
        f"median: sent {sent:.0f}/s  answered {med(r.answered_rate for r in results):.0f}/s"
        f"  lateness p50 {med(r.p50_ms for r in results):.2f} ms  p99 {p99:.2f} ms"
        f"  cpu {med(r.cpu_us for r in results):.0f} us/req"
    )
    verdict = "MET" if sent >= 3000 * 0.99 and p99 <= 5.0 and args.rate >= 3000 else "NOT MET"
    print(f"target (>= 3,000/s sent, lateness p99 <= 5 ms): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
