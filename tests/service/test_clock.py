"""Clock modes: `redis` gives every node one clock; `node` trusts each node's own clock,
which is what lets a skewed node (libfaketime) break the limit."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from pytest_operator._binaries import MissingBinaryError, find_libfaketime
from tests.service.conftest import RedisServer, StartNode

try:
    LIBFAKETIME: Path | None = find_libfaketime()
except MissingBinaryError:
    LIBFAKETIME = None
pytestmark = pytest.mark.skipif(
    LIBFAKETIME is None,
    reason="libfaketime is not installed (./dev setup installs the Debian package faketime)",
)
SKEW = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "+30s", "DONT_FAKE_MONOTONIC": "1"}


async def _allowed(http: httpx.AsyncClient, url: str, key: str, n: int) -> list[bool]:
    return [
        (await http.post(f"{url}/check", json={"key": key})).json()["allowed"] is True
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    ("clock", "skewed_admits"),
    [("redis", [False, False]), ("node", [True, True])],
)
async def test_skewed_node_breaks_the_limit_only_with_node_clocks(
    clock: str,
    skewed_admits: list[bool],
    redis_server: RedisServer,
    start_node: StartNode,
    http: httpx.AsyncClient,
) -> None:
    options = {"clock": clock, "default_limit": 2, "default_window_ms": 10_000}
    honest = start_node(f"honest-{clock}", redis_server.url, **options)
    skewed = start_node(f"skewed-{clock}", redis_server.url, env=SKEW, **options)
    skewed_now = (await http.get(f"{skewed.url}/healthz")).json()["now_ms"]
    assert skewed_now - time.time() * 1000 > 20_000  # the skew shows in /healthz

    assert await _allowed(http, honest.url, "k", 3) == [True, True, False]
    # the skewed node's clock is 30 s ahead: with node clocks it sees the window as over
    assert await _allowed(http, skewed.url, "k", 2) == skewed_admits
