"""A stand-in mesh member for the engine's tests, run by /usr/bin/python3 as its own uid:
``python3 mesh_member.py NAME HOST MAIN_PORT PEER_PORT [PEER=HOST:PORT ...]``.

Every 50 ms it sends a UDP datagram ``ping NAME`` to each peer's PEER_PORT from an unbound
socket (so its source address is the loopback route's 127.0.0.1 until the cluster's SNAT
rule rewrites it to HOST), and it counts the pings it receives on HOST:PEER_PORT, per
sender, with the source address they came from. UDP, not TCP: a one-way cut must show as
one way (a TCP handshake needs both directions).

GET / on HOST:MAIN_PORT answers ``{"name", "uid", "heard": {sender: {"count", "from"}}}``.
Standard library only (it cannot read the project's venv under /root).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys


class Counter(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.heard: dict[str, dict[str, object]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        words = data.decode(errors="replace").split()
        if len(words) == 2 and words[0] == "ping":
            entry = self.heard.setdefault(words[1], {"count": 0, "from": addr[0]})
            entry["count"] = int(str(entry["count"])) + 1
            entry["from"] = addr[0]


async def ping(name: str, peers: list[tuple[str, int]]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    message = f"ping {name}".encode()
    while True:
        for peer in peers:
            try:
                sock.sendto(message, peer)
            except OSError:
                pass  # a full buffer or a refused port: the next round tries again
        await asyncio.sleep(0.05)


async def main(name: str, host: str, main_port: int, peer_port: int, peers: list[str]) -> None:
    loop = asyncio.get_running_loop()
    counter = Counter()
    await loop.create_datagram_endpoint(lambda: counter, local_addr=(host, peer_port))
    targets = []
    for spec in peers:
        _, address = spec.split("=", 1)
        peer_host, port = address.rsplit(":", 1)
        targets.append((peer_host, int(port)))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            body = json.dumps({"name": name, "uid": os.getuid(), "heard": counter.heard})
            data = body.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, main_port)
    pinger = asyncio.create_task(ping(name, targets))
    async with server:
        await server.serve_forever()
    pinger.cancel()


if __name__ == "__main__":
    name_, host_, main_, peer_, *peers_ = sys.argv[1:]
    asyncio.run(main(name_, host_, int(main_), int(peer_), peers_))
