"""A small HTTP/1.1 keep-alive client for POST /check, fast enough to drive ~10k requests.

Each Record keeps the client's own send and receive times (time.monotonic), the
evidence the exactness checks judge from.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    node: str
    sent: float
    received: float
    allowed: bool


class CheckConnection:
    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def check(self, key: str, cost: int = 1) -> dict[str, object]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        body = json.dumps({"key": key, "cost": cost}).encode()
        self._writer.write(
            b"POST /check HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), 10)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        status = int(head.split(b" ", 2)[1])
        payload = await asyncio.wait_for(self._reader.readexactly(length), 10)
        if status != 200:
            raise AssertionError(f"/check answered {status}: {payload!r}")
        answer: dict[str, object] = json.loads(payload)
        return answer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()


async def hammer(
    ports: dict[str, int], key: str, clients: int, total: int, cost: int = 1
) -> list[Record]:
    """`clients` concurrent keep-alive clients, spread over the nodes, `total` requests."""
    records: list[Record] = []
    names = sorted(ports)
    remaining = total

    async def client(index: int) -> None:
        nonlocal remaining
        node = names[index % len(names)]
        connection = CheckConnection(ports[node])
        try:
            while remaining > 0:
                remaining -= 1
                sent = time.monotonic()
                answer = await connection.check(key, cost)
                records.append(Record(node, sent, time.monotonic(), answer["allowed"] is True))
        finally:
            await connection.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return records


def max_in_window(records: list[Record], window_s: float) -> int:
    """The most admitted requests that were certainly decided within one window.

    A decision happened between the request's send and receive times, so a request
    counts for the window [a, a + window_s) only when both lie inside it.
    """
    admitted = sorted((r for r in records if r.allowed), key=lambda r: r.sent)
    best = 0
    for j, anchor in enumerate(admitted):
        end = anchor.sent + window_s
        count = 0
        for other in admitted[j:]:
            if other.sent >= end:
                break
            if other.received < end:
                count += 1
        best = max(best, count)
    return best
