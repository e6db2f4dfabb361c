"""Closed-loop HTTP load for bench_service.py, run as its own process.

`--connections` keep-alive connections each send POST /check {"key": k} back to back
for `--duration` seconds after `--warmup` seconds, with keys drawn from `--keys`
distinct names. Prints one JSON line (a LoadReport): requests, seconds, rate, p50/p99
latency (ms), allowed, answers with the warm-up's, and the errors by kind.

What counts as an error (during warm-up too: a subject that fails while warming up is
not measured): an answer other than 200 or 429 (429 is a rate limiter's "blocked", a
valid decision; the rate limiter answers a denial with 200 and "allowed": false); a 200
whose body says the decision was not made in Redis ("mode" other than "normal": a
degraded node answers by its policy without deciding); a socket error (refused, reset,
closed mid-answer: the connection is opened again after a short pause); an answer that
takes longer than `--timeout` seconds. A run with any error, or with no answer at all,
prints the counts without rate or latency, says what went wrong on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

RECONNECT_PAUSE_S = 0.05
VALID_STATUS = (b"200", b"429")


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What one load run saw; rate and latencies only when nothing went wrong."""

    requests: int  # valid answers during the measured seconds
    seconds: float
    allowed: int
    answered: int  # valid answers, warm-up included (what the subject's CPU time paid for)
    errors: int  # during warm-up and measurement
    error_kinds: dict[str, int] = field(default_factory=dict)
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None

    def describe_errors(self) -> str:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.error_kinds.items()))
        return f"{self.errors} errors ({kinds})"


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    allowed: int = 0
    answered: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def _error_kind(head: bytes, body: bytes) -> str | None:
    """None for a valid decision, else the kind of error the answer is."""
    status = head[9:12]
    if status not in VALID_STATUS:
        return f"HTTP {status.decode(errors='replace')}"
    if b'"mode"' in body and b'"mode":"normal"' not in body.replace(b" ", b""):
        return "degraded answer"
    return None


async def _connection(
    port: int, keys: list[str], start: float, stop: float, timeout: float, tally: _Tally
) -> None:
    rng = random.Random()
    requests = [
        b"POST /check HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        for body in (json.dumps({"key": key}).encode() for key in keys)
    ]
    while time.perf_counter() < stop:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout
            )
        except (OSError, TimeoutError) as error:
            tally.errors[f"connect: {type(error).__name__}"] += 1
            await asyncio.sleep(RECONNECT_PAUSE_S)
            continue
        try:
            if await _exchange(reader, writer, requests, rng, start, stop, timeout, tally):
                return
        except TimeoutError:
            tally.errors["timeout"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            # ValueError: a head without a content-length (or a bad one)
            tally.errors[f"socket: {type(error).__name__}"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await asyncio.sleep(RECONNECT_PAUSE_S)


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    requests: list[bytes],
    rng: random.Random,
    start: float,
    stop: float,
    timeout: float,
    tally: _Tally,
) -> bool:
    """Requests back to back on one connection until `stop` (True), or until the server
    closes it after an error answer (False: the error is counted, not the close)."""
    while True:
        sent = time.perf_counter()
        if sent >= stop:
            return True
        writer.write(rng.choice(requests))
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            index = head.lower().find(b"content-length:")
            if index < 0:
                raise ValueError("answer without content-length")
            length = int(head[index + 15 : head.index(b"\r\n", index)])
            body = await reader.readexactly(length)
        done = time.perf_counter()
        kind = _error_kind(head, body)
        if kind is not None:
            tally.errors[kind] += 1
            if b"connection: close" in head.lower():
                return False
            continue
        tally.answered += 1
        if sent >= start:
            tally.latencies.append(done - sent)
            if b'"allowed":true' in body.replace(b" ", b""):
                tally.allowed += 1


async def run(
    port: int, connections: int, duration: float, warmup: float, keys: int, timeout: float
) -> LoadReport:
    names = [f"bench-{i}" for i in range(keys)]
    tally = _Tally()
    start = time.perf_counter() + warmup
    stop = start + duration
    await asyncio.gather(
        *(_connection(port, names, start, stop, timeout, tally) for _ in range(connections))
    )
    errors = sum(tally.errors.values())
    latencies = sorted(tally.latencies)
    n = len(latencies)
    if errors or not n:
        return LoadReport(n, duration, tally.allowed, tally.answered, errors, dict(tally.errors))
    return LoadReport(
        n,
        duration,
        tally.allowed,
        tally.answered,
        0,
        rate=n / duration,
        p50_ms=latencies[n // 2] * 1000,
        p99_ms=latencies[min(n - 1, int(n * 0.99))] * 1000,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per answer")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    report = asyncio.run(
        run(args.port, args.connections, args.duration, args.warmup, args.keys, args.timeout)
    )
    print(json.dumps(asdict(report)), flush=True)
    if report.errors:
        print(f"service_loadgen: refused: {report.describe_errors()}", file=sys.stderr)
        return 1
    if not report.requests:
        print("service_loadgen: refused: no answer in the measured seconds", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
