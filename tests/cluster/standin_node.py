"""A stand-in service node for the engine's tests: ``python standin_node.py PORT UPSTREAM_PORT``.

GET /healthz -> 200 ``{"now_ms": <wall clock>}``; GET /readyz -> 200 when a TCP connection
to 127.0.0.1:UPSTREAM_PORT opens (and the upstream answers a PING, when it is Redis),
else 503. Standard library only, so it runs under libfaketime like a real node.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def upstream_ok(port: int) -> bool:
    try:
        async with asyncio.timeout(0.5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"PING\r\n")
                await writer.drain()
                return (await reader.readline()).startswith(b"+PONG")
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False


async def main(port: int, upstream: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            path = request.split()[1].decode() if len(request.split()) > 1 else "/"
            if path == "/healthz":
                status, body = 200, {"now_ms": int(time.time() * 1000)}
            elif path == "/readyz":
                ok = await upstream_ok(upstream)
                status, body = (200 if ok else 503), {"ready": ok}
            else:
                status, body = 404, {}
            data = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (OSError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
