"""The node's HTTP protocol writes each response's head and body in one transport write.

uvicorn's own protocol runs on a transport that records its writes (write boundaries
cannot be seen from the other end of a socket); requests go in as raw bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from ratelimiter_service._http import CoalescingHttpToolsProtocol

BODY = b'{"allowed":true}'


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.closed_by_server = False  # closed before the test ended the connection

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    if scope["path"] == "/stream":  # no content-length: chunked, two body messages
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})
        return
    if scope["path"] == "/fail":
        raise RuntimeError("the app failed")
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


async def _serve(request: bytes, responses: int = 1) -> RecordingTransport:
    config = uvicorn.Config(
        app, http=CoalescingHttpToolsProtocol, lifespan="off", proxy_headers=False,
        log_level="critical",
    )  # fmt: skip
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(request)
    async with asyncio.timeout(5):
        while (
            sum(w.startswith(b"HTTP/1.1 ") for w in transport.writes) < responses or protocol.tasks
        ):
            await asyncio.sleep(0.001)
    transport.closed_by_server = transport.closed
    protocol.connection_lost(None)
    return transport


def _request(path: str, method: str = "POST", extra: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: node\r\nContent-Length: 2\r\n".encode()
        + extra
        + b"\r\n{}"
    )


async def test_head_and_body_in_one_write() -> None:
    transport = await _serve(_request("/check"))
    assert len(transport.writes) == 1
    (response,) = transport.writes
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\n" + BODY)
    assert b"content-length: 16\r\n" in response
    assert not transport.closed_by_server


async def test_keep_alive_requests_one_write_each() -> None:
    transport = await _serve(_request("/check") + _request("/check"), responses=2)
    assert len(transport.writes) == 2
    assert all(w.startswith(b"HTTP/1.1 200") and w.endswith(BODY) for w in transport.writes)


async def test_connection_close_writes_then_closes() -> None:
    transport = await _serve(_request("/check", extra=b"Connection: close\r\n"))
    assert len(transport.writes) == 1
    assert b"connection: close\r\n" in transport.writes[0]
    assert transport.writes[0].endswith(BODY)
    assert transport.closed_by_server


async def test_head_request_has_head_only() -> None:
    transport = await _serve(_request("/check", method="HEAD"))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n")


async def test_streamed_body_goes_out_with_the_head_then_in_chunks() -> None:
    transport = await _serve(_request("/stream"))
    assert len(transport.writes) == 2
    first, last = transport.writes
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked\r\n" in first
    assert first.endswith(b"\r\n\r\n3\r\none\r\n")
    assert last == b"3\r\ntwo\r\n0\r\n\r\n"


async def test_app_error_is_a_500_in_one_write() -> None:
    transport = await _serve(_request("/fail"))
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert transport.writes[0].endswith(b"Internal Server Error")
