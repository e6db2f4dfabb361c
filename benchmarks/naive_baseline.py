"""The naive baseline for bench_service.py: one EVALSHA per request on a plain asyncio loop.

A minimal ASGI app under uvicorn (asyncio loop, no batching, no registry, no metrics)
running the same sliding_log Lua script as the service (the check prelude and the
algorithm, composed by the service's own ratelimiter_service._scripts) with the same key
names. A Redis error is not caught: uvicorn answers it with a 500, which the benchmark
counts as an error.

    python benchmarks/naive_baseline.py --port 8100 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from redis.exceptions import NoScriptError

from ratelimiter_service import Algorithm
from ratelimiter_service._scripts import CHECK_SCRIPTS, Keys, Script

# the script exactly as the service sends it: check_prelude.lua + sliding_log.lua
SCRIPT: Script = CHECK_SCRIPTS[Algorithm.SLIDING_LOG]
KEYS = Keys("rl")  # the service's default namespace

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class Baseline:
    def __init__(self, redis_url: str, limit: int, window_ms: int) -> None:
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=1)
        self.limit = limit
        self.window_ms = window_ms
        self.sequence = itertools.count()

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await _respond(send, 200, {"status": "ok"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        key = json.loads(body)["key"]
        args = (self.limit, self.window_ms, 1, "", f"b:{next(self.sequence)}")
        keys = KEYS.state(Algorithm.SLIDING_LOG, key)
        try:
            result = await self.redis.evalsha(SCRIPT.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(SCRIPT.source)
            result = await self.redis.evalsha(SCRIPT.sha, len(keys), *keys, *args)
        allowed, _count, remaining, retry_us, _reset = result
        await _respond(
            send,
            200,
            {"allowed": allowed == 1, "limit": self.limit, "remaining": remaining,
             "retry_after_ms": -(-retry_us // 1000)},
        )  # fmt: skip


async def _respond(
    send: Callable[[Message], Awaitable[None]], status: int, payload: dict[str, object]
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--window-ms", type=int, default=1000)
    args = parser.parse_args()
    app = Baseline(args.redis_url, args.limit, args.window_ms)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="asyncio", lifespan="off",
        access_log=False, log_level="warning", backlog=2048,
    )  # fmt: skip


if __name__ == "__main__":
    main()
