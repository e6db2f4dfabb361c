from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from pytest_operator._binaries import find_toxiproxy_server
from pytest_operator._cluster import Address, HttpReady
from pytest_operator._process import ManagedProcess, RunDirectory, free_port
from pytest_operator._toxiproxy import ToxiproxyClient


@pytest.fixture(scope="module")
async def toxiproxy_address(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Address]:
    """A real toxiproxy-server on a free port, for this module."""
    run_dir = RunDirectory.create(tmp_path_factory.mktemp("toxiproxy-run"))
    api = Address("127.0.0.1", free_port())
    proc = ManagedProcess(
        "toxiproxy",
        [str(find_toxiproxy_server()), "-host", api.host, "-port", str(api.port)],
        run_dir=run_dir,
    )
    await proc.start()
    try:
        await proc.wait_ready(lambda: HttpReady("/version")(api), timeout=15)
        yield api
    finally:
        await proc.stop()


@pytest.fixture
async def toxiproxy(toxiproxy_address: Address) -> AsyncIterator[ToxiproxyClient]:
    async with ToxiproxyClient(toxiproxy_address.url()) as client:
        for name in await client.proxies():
            await client.delete_proxy(name)
        yield client


@pytest.fixture(scope="module")
async def echo_server() -> AsyncIterator[Address]:
    """An in-process TCP echo server: the upstream the proxies under test point at."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Address("127.0.0.1", port)
    finally:
        server.close()
        await server.wait_closed()
