"""The Toxiproxy client against a real toxiproxy-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from pytest_operator._cluster import Address
from pytest_operator._process import free_port
from pytest_operator._toxiproxy import (
    Proxy,
    ProxySpec,
    Stream,
    ToxicType,
    ToxiproxyClient,
    ToxiproxyError,
)


async def round_trip(port: int, payload: bytes = b"ping", timeout: float = 5.0) -> float:
    """Seconds for ``payload`` to come back through the proxy on ``port``."""
    began = time.monotonic()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(payload)
            await writer.drain()
            assert await reader.readexactly(len(payload)) == payload
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
    return time.monotonic() - began


async def proxy_to(toxiproxy: ToxiproxyClient, echo: Address, name: str = "a->b") -> Proxy:
    return await toxiproxy.create_proxy(name, "127.0.0.1:0", str(echo))


async def test_version(toxiproxy: ToxiproxyClient) -> None:
    assert (await toxiproxy.version()).strip()


async def test_proxy_lifecycle(toxiproxy: ToxiproxyClient, echo_server: Address) -> None:
    created = await proxy_to(toxiproxy, echo_server, "node-2->redis")
    assert created.name == "node-2->redis"
    assert created.upstream == str(echo_server)
    assert created.enabled
    assert created.listen_port > 0  # port 0 resolved by the server
    assert await toxiproxy.get_proxy("node-2->redis") == created
    assert list(await toxiproxy.proxies()) == ["node-2->redis"]
    await round_trip(created.listen_port)

    other = free_port()
    updated = await toxiproxy.update_proxy("node-2->redis", listen=f"127.0.0.1:{other}")
    assert updated.listen_port == other
    await round_trip(other)

    await toxiproxy.delete_proxy("node-2->redis")
    assert await toxiproxy.proxies() == {}


async def test_disable_refuses_and_enable_restores(
    toxiproxy: ToxiproxyClient, echo_server: Address
) -> None:
    proxy = await proxy_to(toxiproxy, echo_server)
    disabled = await toxiproxy.disable(proxy.name)
    assert not disabled.enabled
    with pytest.raises(ConnectionRefusedError):
        await round_trip(proxy.listen_port)
    enabled = await toxiproxy.enable(proxy.name)
    assert enabled.enabled
    assert enabled.listen_port == proxy.listen_port  # re-enabled on the same port
    await round_trip(proxy.listen_port)


async def test_latency_toxic_adds_delay_and_updates_with_patch(
    toxiproxy: ToxiproxyClient, echo_server: Address
) -> None:
    proxy = await proxy_to(toxiproxy, echo_server)
    toxic = await toxiproxy.add_toxic(
        proxy.name, ToxicType.LATENCY, {"latency": 200, "jitter": 0}, name="slow"
    )
    assert (toxic.name, toxic.type, toxic.stream) == ("slow", ToxicType.LATENCY, Stream.DOWNSTREAM)
    assert toxic.attributes == {"latency": 200, "jitter": 0}
    assert await round_trip(proxy.listen_port) >= 0.2

    updated = await toxiproxy.update_toxic(proxy.name, "slow", attributes={"latency": 400})
    assert updated.attributes["latency"] == 400
    assert await toxiproxy.get_toxic(proxy.name, "slow") == updated
    assert await round_trip(proxy.listen_port) >= 0.4

    await toxiproxy.remove_toxic(proxy.name, "slow")
    assert await toxiproxy.toxics(proxy.name) == ()


async def test_timeout_toxic_swallows_data(
    toxiproxy: ToxiproxyClient, echo_server: Address
) -> None:
    proxy = await proxy_to(toxiproxy, echo_server)
    await toxiproxy.add_toxic(proxy.name, ToxicType.TIMEOUT, {"timeout": 0}, name="hole")
    with pytest.raises(TimeoutError):
        await round_trip(proxy.listen_port, timeout=0.5)


async def test_populate_and_reset(toxiproxy: ToxiproxyClient, echo_server: Address) -> None:
    created = await toxiproxy.populate(
        [ProxySpec(f"p{i}", "127.0.0.1:0", str(echo_server)) for i in range(3)]
    )
    assert sorted(p.name for p in created) == ["p0", "p1", "p2"]
    await toxiproxy.disable("p0")
    await toxiproxy.add_toxic("p1", ToxicType.BANDWIDTH, {"rate": 1}, stream=Stream.UPSTREAM)
    await toxiproxy.reset()
    after = await toxiproxy.proxies()
    assert all(p.enabled and p.toxics == () for p in after.values())
    assert len(after) == 3


async def test_errors_carry_the_servers_message(
    toxiproxy: ToxiproxyClient, echo_server: Address
) -> None:
    with pytest.raises(ToxiproxyError) as missing:
        await toxiproxy.get_proxy("nope")
    assert (missing.value.status, missing.value.message) == (404, "proxy not found")
    assert str(missing.value) == "toxiproxy GET /proxies/nope: 404 proxy not found"

    proxy = await proxy_to(toxiproxy, echo_server)
    await toxiproxy.add_toxic(proxy.name, ToxicType.LATENCY, {"latency": 1}, name="t")
    with pytest.raises(ToxiproxyError) as dup:
        await toxiproxy.add_toxic(proxy.name, ToxicType.LATENCY, {"latency": 1}, name="t")
    assert str(dup.value) == "toxiproxy POST /proxies/a-%3Eb/toxics: 409 toxic already exists"

    with pytest.raises(ToxiproxyError) as bad:
        await toxiproxy.create_proxy("bad", "127.0.0.1:99999", str(echo_server))
    assert bad.value.status == 500  # a server error is raised, never swallowed
    assert "invalid port" in bad.value.message


async def test_unreachable_server_is_an_error() -> None:
    port = free_port()  # nothing listens here
    async with ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=1.0) as client:
        with pytest.raises(ToxiproxyError) as err:
            await client.version()
    assert err.value.status == 0
    assert err.value.message.startswith(f"cannot reach http://127.0.0.1:{port}: ConnectError")


async def test_every_call_has_a_timeout() -> None:
    """A server that accepts and never answers: the call fails after the timeout."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with ToxiproxyClient(f"http://127.0.0.1:{port}", timeout=0.3) as client:
            began = time.monotonic()
            with pytest.raises(ToxiproxyError) as err:
                await client.reset()
            assert time.monotonic() - began < 5
        assert str(err.value) == (
            f"toxiproxy POST /reset: no answer from http://127.0.0.1:{port} within 0.3s"
        )
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_clients_are_independent(
    toxiproxy: ToxiproxyClient, toxiproxy_address: Address
) -> None:
    """The base URL is per instance (toxiproxy-python keeps it in class globals)."""
    dead = ToxiproxyClient(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    try:
        assert dead.base_url != toxiproxy.base_url
        assert toxiproxy.base_url == toxiproxy_address.url()
        assert await toxiproxy.version()
        with pytest.raises(ToxiproxyError):
            await dead.version()
    finally:
        await dead.aclose()


async def test_update_with_nothing_is_a_clear_error(toxiproxy: ToxiproxyClient) -> None:
    with pytest.raises(ValueError, match=r"^update_proxy: nothing to update"):
        await toxiproxy.update_proxy("x")
