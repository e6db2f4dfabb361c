"""etcd's requester: puts and linearizable reads through the v3 JSON gateway.

Each request goes to one member through its client link (the Toxiproxy proxy), so a cut
client link shows as that member's errors. Requests alternate per key: a put of the next
value, then a linearizable range read of the key (``serializable`` false: the member
confirms with the leader's quorum before answering, so a member without quorum cannot
serve it). A 200 answer without an ``error`` field is ``ok``; an error reply or a
transport failure is ``error`` (with the reason as detail); no answer within the timeout
is ``timeout`` (etcd itself gives up on a request only after 5 s + 2 x the election
timeout, so without a quorum clients see timeouts, not errors). Keys live under
:data:`KEY_PREFIX`, which the session's reset deletes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import Mapping

import httpx

from pytest_operator import Call, Outcome, Response

KEY_PREFIX = "pytest-operator/workload/"
TIMEOUT = 1.0


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def prefix_range(prefix: str) -> dict[str, str]:
    """The ``key`` / ``range_end`` pair of every key starting with ``prefix``."""
    raw = prefix.encode()
    end = raw[:-1] + bytes([raw[-1] + 1])  # the prefix's last byte + 1 (no 0xff here)
    return {"key": base64.b64encode(raw).decode(), "range_end": base64.b64encode(end).decode()}


class EtcdClient:
    """A :class:`~pytest_operator.Requester` for etcd members.

    ``urls`` maps member name -> base URL (its client link); ``timeout`` bounds one
    request, connecting included.
    """

    def __init__(
        self, urls: Mapping[str, str], *, timeout: float = TIMEOUT, prefix: str = KEY_PREFIX
    ) -> None:
        if not urls:
            raise ValueError("EtcdClient needs at least one member URL")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not prefix:
            raise ValueError("the key prefix cannot be empty")
        self.urls = dict(urls)
        self.timeout = timeout
        self.prefix = prefix
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self._counters: dict[str, itertools.count[int]] = {}

    async def __call__(self, target: str, call: Call) -> Response:
        key = call.key
        n = next(self._counters.setdefault(key, itertools.count()))
        if n % 2 == 0:
            return await self.put(target, key, str(n // 2))
        return await self.get(target, key)

    async def put(self, target: str, key: str, value: str) -> Response:
        body = {"key": b64(self.prefix + key), "value": b64(value)}
        return await self._call(target, "/v3/kv/put", body, f"put {key}={value}")

    async def get(self, target: str, key: str) -> Response:
        body = {"key": b64(self.prefix + key), "serializable": False}
        return await self._call(target, "/v3/kv/range", body, f"get {key}")

    async def _call(self, target: str, path: str, body: object, what: str) -> Response:
        try:
            base = self.urls[target]
        except KeyError:
            known = ", ".join(sorted(self.urls))
            raise ValueError(f"unknown target {target!r} (known: {known})") from None
        try:
            async with asyncio.timeout(self.timeout):
                r = await self._http.post(f"{base}{path}", content=json.dumps(body))
        except (TimeoutError, httpx.TimeoutException):
            return Response(Outcome.TIMEOUT, f"{what}: no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return Response(Outcome.ERROR, f"{what}: transport: {type(exc).__name__}: {exc}")
        try:
            reply = r.json()
        except ValueError:
            reply = None
        if r.status_code != 200 or not isinstance(reply, dict) or "error" in reply:
            text = r.text[:200]
            return Response(Outcome.ERROR, f"{what}: HTTP {r.status_code}: {text}")
        return Response(Outcome.OK)

    async def aclose(self) -> None:
        await self._http.aclose()
