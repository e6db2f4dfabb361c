"""uvicorn's httptools protocol, writing each response's head and body in one write.

uvicorn writes ``http.response.start`` (status line and headers) and
``http.response.body`` as two transport writes, and uvloop sends each at once: two
``write`` system calls and two TCP segments per response, and the client wakes twice.
Here the head is held back until the body comes and both go out together. Everything
else (parsing, keep-alive, flow control, pipelining, errors) is uvicorn's own code.
"""

from __future__ import annotations

import asyncio

from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _Held:
    """Stands in for the transport while uvicorn formats one message: keeps what it writes.

    uvicorn's send only writes and closes (after any wait for the flow control, which
    is done before this stands in).
    """

    __slots__ = ("chunks", "closed", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.chunks: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.transport.is_closing()


class _Cycle(RequestResponseCycle):
    head: list[bytes] | None = None

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # as uvicorn would, but before the transport is swapped
        transport = self.transport
        held = _Held(transport)
        self.transport = held  # type: ignore[assignment]  # uvicorn's send only writes/closes
        try:
            await super().send(message)
        finally:
            self.transport = transport
        if message["type"] == "http.response.start" and self.response_started:
            self.head = held.chunks
            if not held.closed:
                return
        chunks = held.chunks
        if self.head is not None:
            chunks = self.head + chunks
            self.head = None
        if chunks and not self.disconnected:
            transport.write(b"".join(chunks))
        if held.closed:
            transport.close()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose responses go out in one write (see the module docstring)."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # the cycle was just made by uvicorn's on_headers_complete and has not run yet
        cycle.__class__ = _Cycle
        super()._start_asgi_task(cycle, app)
