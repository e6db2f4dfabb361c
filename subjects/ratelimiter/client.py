"""The rate limiter's requester: ``POST /check`` to a node, mapped onto outcomes.

allowed -> ``ok``, blocked -> ``rejected``, a non-200 reply or a transport
failure -> ``error`` (with the reason as detail), no answer in time ->
``timeout``. A degraded node's decisions carry ``mode=degraded`` as detail.

Throughput matters here (the workload must offer thousands of requests per
second from one process), so this is a small HTTP/1.1 client over asyncio
streams with a keep-alive connection pool per node, not a general one: it
speaks exactly what ``/check`` needs (a JSON POST; a reply framed by
Content-Length, chunked, or connection close). httpx costs several times more
CPU per request (see benchmarks/bench_workload.py).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pytest_operator._history import Outcome
from pytest_operator._workload import Response

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024


class HttpError(Exception):
    """A malformed or unexpected HTTP reply."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A node's answer to ``POST /check``."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_ms: int
    node: str
    mode: str

    @classmethod
    def parse(cls, body: bytes) -> Decision:
        """Parse the JSON body of a 200 reply; anything else raises HttpError."""
        try:
            raw = json.loads(body)
        except ValueError as exc:
            raise HttpError(f"reply is not JSON: {body[:200]!r}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("allowed"), bool):
            raise HttpError(f'reply has no boolean "allowed": {body[:200]!r}')
        try:
            return cls(
                allowed=raw["allowed"],
                limit=int(raw.get("limit", 0)),
                remaining=int(raw.get("remaining", 0)),
                retry_after_ms=int(raw.get("retry_after_ms", 0)),
                node=str(raw.get("node", "")),
                mode=str(raw.get("mode", "")),
            )
        except (TypeError, ValueError) as exc:
            raise HttpError(f"reply has a malformed field: {body[:200]!r}") from exc


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    reason: str
    body: bytes
    keep_alive: bool


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer


class _Pool:
    """Keep-alive connections to one node, at most ``size`` at a time."""

    def __init__(self, url: str, size: int) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"a node URL must be http://HOST:PORT[/PREFIX], got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.idle: deque[_Connection] = deque()
        self.slots = asyncio.Semaphore(size)
        host_header = parts.netloc
        self.head_template = (
            f"POST {self.prefix}/check HTTP/1.1\r\nHost: {host_header}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()

    def close(self) -> None:
        while self.idle:
            self.idle.popleft().writer.close()


class RateLimiterClient:
    """A :class:`~pytest_operator.Requester` for rate limiter nodes.

    ``urls`` maps node name -> base URL (``http://127.0.0.1:8001``). ``timeout``
    bounds one check, connecting included; ``max_connections`` bounds the
    connections (so the concurrent checks) per node, further checks wait for one.
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        timeout: float = 2.0,
        max_connections: int = 512,
        cost: int = 1,
    ) -> None:
        if not urls:
            raise ValueError("RateLimiterClient needs at least one node URL")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = timeout
        self.cost = cost
        self._pools = {name: _Pool(url, max_connections) for name, url in urls.items()}
        self._closed = False

    async def __call__(self, target: str, key: str) -> Response:
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._post(target, key, self.cost)
        except TimeoutError:
            return Response(Outcome.TIMEOUT, f"no reply within {self.timeout} s")
        except (OSError, EOFError, HttpError, asyncio.IncompleteReadError) as exc:
            return Response(Outcome.ERROR, f"transport: {exc!r}")
        if reply.status != 200:
            text = reply.body[:200].decode("utf-8", "replace")
            return Response(Outcome.ERROR, f"HTTP {reply.status} {reply.reason}: {text}")
        try:
            decision = Decision.parse(reply.body)
        except HttpError as exc:
            return Response(Outcome.ERROR, str(exc))
        detail = None if decision.mode in ("normal", "") else f"mode={decision.mode}"
        return Response(Outcome.OK if decision.allowed else Outcome.REJECTED, detail)

    async def check(self, target: str, key: str, cost: int = 1) -> Decision:
        """One check, returning the node's full decision; failures raise (HttpError, OSError,
        TimeoutError)."""
        async with asyncio.timeout(self.timeout):
            reply = await self._post(target, key, cost)
        if reply.status != 200:
            raise HttpError(f"HTTP {reply.status} {reply.reason}: {reply.body[:200]!r}")
        return Decision.parse(reply.body)

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()

    async def _post(self, target: str, key: str, cost: int) -> _Reply:
        if self._closed:
            raise RuntimeError("the client is closed")
        try:
            pool = self._pools[target]
        except KeyError:
            known = ", ".join(sorted(self._pools))
            raise ValueError(f"unknown target {target!r} (known: {known})") from None
        body = json.dumps({"key": key, "cost": cost}).encode()
        request = pool.head_template + b"%d\r\n\r\n" % len(body) + body
        async with pool.slots:
            while pool.idle:
                # A reused connection the node has closed fails before any reply byte:
                # the node never saw the request, so sending it again is safe.
                conn = pool.idle.pop()
                try:
                    return await self._exchange(pool, conn, request)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        raise
            reader, writer = await asyncio.open_connection(pool.host, pool.port)
            return await self._exchange(pool, _Connection(reader, writer), request)

    async def _exchange(self, pool: _Pool, conn: _Connection, request: bytes) -> _Reply:
        keep = False
        try:
            conn.writer.write(request)
            reply = await read_reply(conn.reader)
            keep = reply.keep_alive and not self._closed
            return reply
        finally:
            if keep:
                pool.idle.append(conn)
            else:
                conn.writer.close()


async def read_reply(reader: asyncio.StreamReader) -> _Reply:
    """Read one HTTP/1.x reply: status line, headers, and a body framed by
    Content-Length, chunked transfer coding, or the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise HttpError("reply head too long") from exc
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError("reply head too long")
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0].split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise HttpError(f"bad status line {lines[0][:100]!r}")
    version = status_line[0]
    try:
        status = int(status_line[1])
    except ValueError:
        raise HttpError(f"bad status line {lines[0][:100]!r}") from None
    reason = status_line[2].decode("latin-1") if len(status_line) > 2 else ""
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError(f"bad header line {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get(b"connection", b"").lower()
    keep_alive = connection != b"close" if version == b"HTTP/1.1" else connection == b"keep-alive"
    if status in (204, 304) or 100 <= status < 200:
        return _Reply(status, reason, b"", keep_alive)
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = await _read_chunked(reader)
    elif b"content-length" in headers:
        try:
            length = int(headers[b"content-length"])
        except ValueError:
            raise HttpError(f"bad Content-Length {headers[b'content-length']!r}") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise HttpError(f"Content-Length {length} out of bounds")
        body = await reader.readexactly(length)
    else:
        body = await reader.read(MAX_BODY_BYTES)
        keep_alive = False
    return _Reply(status, reason, body, keep_alive)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(f"bad chunk size {size_line[:100]!r}") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise HttpError("chunked reply too long")
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise HttpError("chunk not terminated by CRLF")
        parts.append(chunk[:-2])
