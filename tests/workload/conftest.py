from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.workload.standin import StandinNode


@pytest_asyncio.fixture(loop_scope="session")
async def node() -> AsyncIterator[StandinNode]:
    server = await StandinNode().start()
    try:
        yield server
    finally:
        await server.close()
