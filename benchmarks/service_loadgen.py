"""Closed-loop HTTP load for bench_service.py, run as its own process.

`--connections` keep-alive connections each send POST /check {"key": k} back to back
for `--duration` seconds after `--warmup` seconds, with keys drawn from `--keys`
distinct names. Prints one JSON line: requests, seconds, rate, p50/p99 latency (ms),
errors, allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time


async def _connection(
    port: int, keys: list[str], start: float, stop: float, latencies: list[float],
    counts: dict[str, int],
) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rng = random.Random()
    requests = [
        b"POST /check HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        for body in (json.dumps({"key": key}).encode() for key in keys)
    ]
    try:
        while True:
            sent = time.perf_counter()
            if sent >= stop:
                return
            writer.write(rng.choice(requests))
            head = await reader.readuntil(b"\r\n\r\n")
            index = head.lower().find(b"content-length:")
            length = int(head[index + 15 : head.index(b"\r\n", index)])
            body = await reader.readexactly(length)
            done = time.perf_counter()
            if sent >= start:
                latencies.append(done - sent)
                if not head.startswith(b"HTTP/1.1 200"):
                    counts["errors"] += 1
                elif b'"allowed":true' in body.replace(b" ", b""):
                    counts["allowed"] += 1
    finally:
        writer.close()


async def run(port: int, connections: int, duration: float, warmup: float, keys: int) -> None:
    names = [f"bench-{i}" for i in range(keys)]
    latencies: list[float] = []
    counts = {"errors": 0, "allowed": 0}
    start = time.perf_counter() + warmup
    stop = start + duration
    await asyncio.gather(
        *(_connection(port, names, start, stop, latencies, counts) for _ in range(connections))
    )
    latencies.sort()
    n = len(latencies)
    print(
        json.dumps(
            {
                "requests": n,
                "seconds": duration,
                "rate": n / duration,
                "p50_ms": latencies[n // 2] * 1000 if n else None,
                "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else None,
                **counts,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--keys", type=int, default=1000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(args.port, args.connections, args.duration, args.warmup, args.keys))


if __name__ == "__main__":
    main()
