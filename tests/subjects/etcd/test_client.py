"""The etcd client's register ops on a real 3-member cluster: reads (linearizable or
serializable), writes, compare-and-sets, and how each failure is classified (a read's
failure changes nothing: error; a write's is error only when it surely never took
effect, else indeterminate: timeout)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio

from pytest_operator import Call, OpKind, Outcome, Response
from pytest_operator._cluster import EmbeddedCluster
from subjects.etcd.actions import MaintenanceApi
from subjects.etcd.client import KEY_PREFIX, EtcdClient, prefix_range
from tests.subjects.etcd.conftest import MEMBERS, WAIT

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(loop_scope="session")
async def clients(cluster: EmbeddedCluster) -> AsyncIterator[tuple[EtcdClient, EtcdClient]]:
    """A linearizable and a serializable client, on a healed cluster with no workload keys."""
    await cluster.reset()
    urls = {m: cluster.client_url(m) for m in MEMBERS}
    linear, local = EtcdClient(urls), EtcdClient(urls, reads="serializable")
    try:
        deadline = time.monotonic() + WAIT
        while not await delete_all(cluster):  # a cluster just healed may still elect
            assert time.monotonic() < deadline, "the workload keys were not deleted"
            await asyncio.sleep(0.2)
        yield linear, local
    finally:
        await linear.aclose()
        await local.aclose()


async def delete_all(cluster: EmbeddedCluster) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as http:
        try:
            url = cluster.address("etcd-1").url(path="/v3/kv/deleterange")
            r = await http.post(url, content=json.dumps(prefix_range(KEY_PREFIX)))
            return r.status_code == 200 and "error" not in r.json()
        except (httpx.HTTPError, ValueError):
            return False


async def eventually(
    get: Callable[[], Awaitable[Response]],
    ok: Callable[[Response], bool],
    what: str,
    timeout: float = WAIT,
) -> Response:
    """``get()`` until ``ok`` holds (bounded in time); fails naming the last value."""
    deadline = time.monotonic() + timeout
    value = await get()
    while not ok(value):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s; last: {value!r}")
        await asyncio.sleep(0.1)
        value = await get()
    return value


async def stored(cluster: EmbeddedCluster, key: str) -> dict[str, object] | None:
    """The raw key-value etcd-1 stores for a workload key (None: absent)."""
    body = {"key": base64.b64encode((KEY_PREFIX + key).encode()).decode()}
    async with httpx.AsyncClient(timeout=5.0) as http:
        url = cluster.address("etcd-1").url(path="/v3/kv/range")
        kvs = (await http.post(url, content=json.dumps(body))).json().get("kvs")
    return kvs[0] if kvs else None


def ok(result: str | None) -> Response:
    return Response(Outcome.OK, result=result)


async def test_reads_writes_and_compare_and_sets_are_a_register_per_key(
    cluster: EmbeddedCluster, clients: tuple[EtcdClient, EtcdClient]
) -> None:
    c, _ = clients
    assert await c("etcd-1", Call("r", OpKind.READ)) == ok(None)  # absent
    assert await c("etcd-2", Call("r", OpKind.CAS, "a", None)) == Response(Outcome.OK)
    assert await c("etcd-3", Call("r", OpKind.READ)) == ok("a")
    # a failed compare reports the value it found
    again = await c("etcd-1", Call("r", OpKind.CAS, "b", None))  # expects absent
    assert (again.outcome, again.result) == (Outcome.REJECTED, "a"), again
    wrong = await c("etcd-2", Call("r", OpKind.CAS, "b", "zzz"))
    assert (wrong.outcome, wrong.result) == (Outcome.REJECTED, "a"), wrong
    assert await c("etcd-3", Call("r", OpKind.CAS, "b", "a")) == Response(Outcome.OK)
    assert [await c(m, Call("r", OpKind.READ)) for m in MEMBERS] == [ok("b")] * 3
    assert await c("etcd-1", Call("r", OpKind.WRITE, "c")) == Response(Outcome.OK)
    assert await c("etcd-2", Call("r", OpKind.READ)) == ok("c")
    # a compare against an absent key finds nothing: result None
    none = await c("etcd-1", Call("nothing", OpKind.CAS, "x", "y"))
    assert (none.outcome, none.result) == (Outcome.REJECTED, None), none
    assert await stored(cluster, "nothing") is None
    # values are stored as given, under the workload's prefix; an empty one too
    kv = await stored(cluster, "r")
    assert kv is not None and base64.b64decode(str(kv["value"])) == b"c"
    assert await c("etcd-3", Call("e", OpKind.WRITE, "")) == Response(Outcome.OK)
    assert await c("etcd-1", Call("e", OpKind.READ)) == ok("")
    assert await c("etcd-2", Call("e", OpKind.CAS, "f", "")) == Response(Outcome.OK)
    assert await c("etcd-2", Call("e", OpKind.READ)) == ok("f")


async def test_a_call_of_a_kind_etcd_does_not_take_is_an_error_naming_the_kinds(
    clients: tuple[EtcdClient, EtcdClient],
) -> None:
    c, _ = clients
    reply = await c("etcd-1", Call("k"))  # an opaque request
    assert reply.outcome is Outcome.ERROR
    assert reply.detail == "etcd takes read, write, cas calls; got a 'request' call on 'k'"
    assert (await c("etcd-1", Call("k", "append", "1"))).outcome is Outcome.ERROR
    with pytest.raises(ValueError, match="unknown target 'etcd-9'"):
        await c("etcd-9", Call("k", OpKind.READ))


def test_the_read_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="reads='eventual': invalid value; valid values:"):
        EtcdClient({"etcd-1": "http://127.0.0.1:1"}, reads="eventual")


async def test_a_request_etcd_refuses_before_proposing_is_a_definite_error(
    cluster: EmbeddedCluster, clients: tuple[EtcdClient, EtcdClient]
) -> None:
    c, _ = clients
    # over etcd's 1.5 MiB request limit; over gRPC's 2 MiB message limit
    for size, refused in ((1600, "3 (INVALID_ARGUMENT)"), (2048, "8 (RESOURCE_EXHAUSTED)")):
        big = "x" * (size * 1024)
        for call in (Call("big", OpKind.WRITE, big), Call("big", OpKind.CAS, big, None)):
            reply = await c("etcd-1", call)
            assert reply.outcome is Outcome.ERROR, reply
            assert reply.detail is not None and f"(code {refused})" in reply.detail, reply
            assert f"'xxxxxxxxxxxxxxxxxxxxxxxx'... ({size * 1024} chars)" in reply.detail
    assert await stored(cluster, "big") is None


async def test_a_refused_connection_fails_a_write_for_sure(
    cluster: EmbeddedCluster, clients: tuple[EtcdClient, EtcdClient]
) -> None:
    c, _ = clients
    proxy = cluster.proxy_name("client", "etcd-1")
    await cluster.toxiproxy.disable(proxy)  # nothing listens at etcd-1's client link
    try:
        for call in (Call("k", OpKind.WRITE, "1"), Call("k", OpKind.CAS, "1", None)):
            reply = await c("etcd-1", call)
            assert reply.outcome is Outcome.ERROR, reply
            assert reply.detail is not None and ": not sent: ConnectError" in reply.detail
    finally:
        await cluster.toxiproxy.enable(proxy)
    assert await stored(cluster, "k") is None
    assert await c("etcd-1", Call("k", OpKind.WRITE, "1")) == Response(Outcome.OK)


async def test_a_frozen_member_leaves_writes_indeterminate_and_fails_reads(
    cluster: EmbeddedCluster, clients: tuple[EtcdClient, EtcdClient]
) -> None:
    c, local = clients
    cluster.process("etcd-2").pause()
    try:
        started = time.monotonic()
        calls = [Call("k", OpKind.WRITE, "1"), Call("k", OpKind.CAS, "2", "1")]
        replies = [await c("etcd-2", call) for call in calls]
        assert [r.outcome for r in replies] == [Outcome.TIMEOUT] * 2, replies
        assert all("no answer within 1 s" in str(r.detail) for r in replies), replies
        for client in (c, local):  # a read changes nothing: a failed one is an error
            read = await client("etcd-2", Call("k", OpKind.READ))
            assert read.outcome is Outcome.ERROR and read.result is None, read
        assert time.monotonic() - started < 4 * 3.0  # each bounded by its 1 s timeout
    finally:
        cluster.process("etcd-2").resume()


async def test_an_isolated_follower_serves_stale_serializable_reads_and_no_linearizable_one(
    cluster: EmbeddedCluster, clients: tuple[EtcdClient, EtcdClient]
) -> None:
    linear, local = clients
    api = MaintenanceApi({m: cluster.address(m).url() for m in MEMBERS})
    try:
        _, leader = await api.member_ids()
    finally:
        await api.aclose()
    cut = next(m for m in MEMBERS if m != leader)
    other = next(m for m in MEMBERS if m not in (leader, cut))
    assert await linear(other, Call("s", OpKind.WRITE, "1")) == Response(Outcome.OK)
    await eventually(lambda: local(cut, Call("s", OpKind.READ)), lambda r: r == ok("1"), "s=1")
    net = cluster.netfilter
    for peer in (leader, other):
        net.drop(cluster.host(cut), cluster.host(peer), "test")
        net.drop(cluster.host(peer), cluster.host(cut), "test")
    try:
        # the majority moves on; the isolated follower serves what it had
        assert await linear(other, Call("s", OpKind.WRITE, "2")) == Response(Outcome.OK)
        assert await linear(leader, Call("s", OpKind.READ)) == ok("2")
        assert await local(cut, Call("s", OpKind.READ)) == ok("1")  # stale
        read = await linear(cut, Call("s", OpKind.READ))  # needs the leader: none answers
        assert read.outcome is Outcome.ERROR and read.result is None, read
        # a write there may still commit once the cut heals: indeterminate (another key)
        write = await linear(cut, Call("w", OpKind.WRITE, "9"))
        assert write.outcome is Outcome.TIMEOUT, write
        # the majority's compare-and-set sees the newer value
        cas = await linear(leader, Call("s", OpKind.CAS, "3", "1"))
        assert (cas.outcome, cas.result) == (Outcome.REJECTED, "2"), cas
        assert await local(cut, Call("s", OpKind.READ)) == ok("1")  # still stale
    finally:
        net.clear_drops()
    await eventually(lambda: local(cut, Call("s", OpKind.READ)), lambda r: r == ok("2"), "s=2")
