"""The rate limiter's requester: ``POST /check`` to a node, mapped onto outcomes.

allowed -> ``ok``, blocked -> ``rejected``, a non-200 reply or a transport
failure -> ``error`` (with the reason as detail), no answer in time ->
``timeout``. A degraded node's decisions carry ``mode=degraded`` as detail.

Throughput matters here (the workload must offer thousands of requests per
second from one process), so this is a small HTTP/1.1 client over asyncio
streams with a keep-alive connection pool per node, not a general one: it
speaks exactly what ``/check`` needs (a JSON POST; a reply framed by
Content-Length, chunked, or connection close), each connection an
asyncio.Protocol that parses the reply as its bytes arrive. httpx costs several
times more CPU per request (see benchmarks/bench_workload.py).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from pytest_operator._history import OpKind, Outcome
from pytest_operator._workload import Call, Response

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
REQUEST_CACHE_SIZE = 10_000  # encoded requests kept per node (keys repeat under load)


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


class ClosedBeforeReply(ConnectionError):
    """The node closed the connection before any byte of a reply (for a reused
    connection: it had closed while idle, and never saw the request)."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, the reply parsed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[_Reply] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport writes; uvloop's do not subclass asyncio.WriteTransport.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._try_complete(eof=False)

    def eof_received(self) -> bool:
        self._try_complete(eof=True)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self._try_complete(eof=True)
            if not waiter.done():
                if not self.buffer:
                    waiter.set_exception(
                        ClosedBeforeReply("the node closed the connection before any reply")
                    )
                else:
                    waiter.set_exception(
                        HttpError(f"connection closed mid-reply after {len(self.buffer)} bytes")
                    )

    def _try_complete(self, *, eof: bool) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            parsed = parse_reply(bytes(self.buffer), eof=eof)
        except HttpError as exc:
            waiter.set_exception(exc)
            return
        if parsed is not None:
            reply, used = parsed
            del self.buffer[:used]
            waiter.set_result(reply)

    async def exchange(self, request: bytes) -> _Reply:
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            raise ClosedBeforeReply("connection already closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.buffer.clear()
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


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
        self.requests: dict[tuple[str, int], bytes] = {}  # encoded requests by (key, cost)
        host_header = parts.netloc
        self.head_template = (
            f"POST {self.prefix}/check HTTP/1.1\r\nHost: {host_header}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn

    def close(self) -> None:
        while self.idle:
            self.idle.popleft().close()


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

    async def __call__(self, target: str, call: Call) -> Response:
        if call.kind != OpKind.REQUEST:
            return Response(Outcome.ERROR, f"the rate limiter takes checks only, not {call.kind}")
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._post(target, call.key, self.cost)
        except TimeoutError:
            return Response(Outcome.TIMEOUT, f"no reply within {self.timeout} s")
        except (OSError, HttpError) as exc:
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
        request = pool.requests.get((key, cost))
        if request is None:
            body = json.dumps({"key": key, "cost": cost}).encode()
            request = pool.head_template + b"%d\r\n\r\n" % len(body) + body
            if len(pool.requests) < REQUEST_CACHE_SIZE:
                pool.requests[(key, cost)] = request
        async with pool.slots:
            while pool.idle:
                # A reused connection the node has closed fails before any reply byte:
                # the node never saw the request, so sending it again is safe.
                try:
                    return await self._exchange(pool, pool.idle.pop(), request)
                except ClosedBeforeReply:
                    continue
            return await self._exchange(pool, await pool.connect(), request)

    async def _exchange(self, pool: _Pool, conn: _Connection, request: bytes) -> _Reply:
        keep = False
        try:
            reply = await conn.exchange(request)
            keep = reply.keep_alive and not self._closed
            return reply
        finally:
            if keep:
                pool.idle.append(conn)
            else:
                conn.close()


def parse_reply(data: bytes, *, eof: bool) -> tuple[_Reply, int] | None:
    """Parse one HTTP/1.x reply at the start of ``data``: status line, headers, and a
    body framed by Content-Length, chunked transfer coding, or the end of the
    connection (``eof``). Returns the reply and the bytes it used, or None when more
    bytes are needed; a malformed reply raises HttpError."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        if len(data) > MAX_HEAD_BYTES:
            raise HttpError("reply head too long")
        if eof and data:
            raise HttpError(f"connection closed inside the reply head: {data[:100]!r}")
        return None
    lines = data[:head_end].split(b"\r\n")
    status_line = lines[0].split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise HttpError(f"bad status line {lines[0][:100]!r}")
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
    keep_alive = (
        connection != b"close" if status_line[0] == b"HTTP/1.1" else connection == b"keep-alive"
    )
    start = head_end + 4
    if status in (204, 304) or 100 <= status < 200:
        return _Reply(status, reason, b"", keep_alive), start
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        parsed = _parse_chunked(data, start)
        if parsed is None:
            if eof:
                raise HttpError("connection closed inside a chunked body")
            return None
        body, end = parsed
        return _Reply(status, reason, body, keep_alive), end
    if b"content-length" in headers:
        try:
            length = int(headers[b"content-length"])
        except ValueError:
            raise HttpError(f"bad Content-Length {headers[b'content-length']!r}") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise HttpError(f"Content-Length {length} out of bounds")
        if len(data) < start + length:
            if eof:
                raise HttpError(
                    f"connection closed after {len(data) - start} of {length} body bytes"
                )
            return None
        return _Reply(status, reason, data[start : start + length], keep_alive), start + length
    if len(data) - start > MAX_BODY_BYTES:
        raise HttpError("reply body too long")
    if not eof:
        return None  # framed by the end of the connection
    return _Reply(status, reason, data[start:], False), len(data)


def _parse_chunked(data: bytes, at: int) -> tuple[bytes, int] | None:
    parts: list[bytes] = []
    total = 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None
        try:
            size = int(data[at:line_end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(f"bad chunk size {data[at:line_end][:100]!r}") from None
        at = line_end + 2
        if size == 0:
            while True:  # trailers, up to an empty line
                line_end = data.find(b"\r\n", at)
                if line_end < 0:
                    return None
                empty = line_end == at
                at = line_end + 2
                if empty:
                    return b"".join(parts), at
        total += size
        if total > MAX_BODY_BYTES:
            raise HttpError("chunked reply too long")
        if len(data) < at + size + 2:
            return None
        if data[at + size : at + size + 2] != b"\r\n":
            raise HttpError("chunk not terminated by CRLF")
        parts.append(data[at : at + size])
        at += size + 2
