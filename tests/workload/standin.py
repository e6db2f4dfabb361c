"""A stand-in rate limiter node for the workload tests: real sockets, real HTTP/1.1.

It answers ``POST /check`` by the request's key, so one server exercises every
reply shape the client must handle:

- ``allow...`` / ``block...``: 200 JSON, allowed true / false (Content-Length);
- ``chunked``: allowed, chunked transfer coding; ``close``: allowed, then
  ``Connection: close``; ``http10``: allowed over HTTP/1.0 framed by the close;
- ``silent-close``: allowed with keep-alive headers, then the socket is closed
  (a stale keep-alive connection for the next request);
- ``degraded``: allowed in mode degraded; ``boom``: 500 text; ``garbage``: 200
  non-JSON; ``noallowed``: 200 JSON without ``allowed``; ``drop``: the
  connection is closed without a reply; ``slow:S``: allowed after S seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field


def _json_reply(allowed: bool, mode: str = "normal", extra: bytes = b"") -> bytes:
    body = json.dumps(
        {
            "allowed": allowed,
            "limit": 10,
            "remaining": 9 if allowed else 0,
            "retry_after_ms": 0 if allowed else 250,
            "node": "standin",
            "mode": mode,
        }
    ).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (extra, len(body), body)
    )


@dataclass
class StandinNode:
    """The server; ``requests`` holds (method, path, host, body) of each request received."""

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[tuple[str, str, str, dict[str, object]]] = field(default_factory=list)
    connections: int = 0
    concurrent: int = 0
    max_concurrent: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> StandinNode:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is to be closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
        self.requests.append((method, path, headers.get("host", ""), body))
        key = str(body.get("key", ""))
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            return await self._reply(key, writer)
        finally:
            self.concurrent -= 1

    async def _reply(self, key: str, writer: asyncio.StreamWriter) -> bool:
        if key.startswith("slow:"):
            await asyncio.sleep(float(key.split(":", 1)[1]))
            writer.write(_json_reply(True))
        elif key.startswith("block"):
            writer.write(_json_reply(False))
        elif key == "chunked":
            body = json.dumps({"allowed": True, "mode": "normal"}).encode()
            half = len(body) // 2
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n"
                % (half, body[:half], len(body) - half, body[half:])
            )
        elif key == "close":
            writer.write(_json_reply(True, extra=b"Connection: close\r\n"))
            await writer.drain()
            return False
        elif key == "http10":
            writer.write(b'HTTP/1.0 200 OK\r\n\r\n{"allowed": false}')
            await writer.drain()
            return False
        elif key == "silent-close":
            writer.write(_json_reply(True))
            await writer.drain()
            return False
        elif key == "degraded":
            writer.write(_json_reply(True, mode="degraded"))
        elif key == "boom":
            writer.write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 13\r\n\r\nredis is down"
            )
        elif key == "garbage":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!")
        elif key == "noallowed":
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"limit":1}')
        elif key == "drop":
            return False
        else:
            writer.write(_json_reply(True))
        await writer.drain()
        return True
