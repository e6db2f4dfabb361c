"""EmbeddedCluster with a mesh: named extra ports, own loopback hosts, direct links between
members that run as their own uids (SNAT to their own host), and the client reaching each
member through Toxiproxy. The members are real processes (tests/cluster/mesh_member.py);
the rules are real iptables rules."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from pytest_operator._cluster import (
    CLIENT,
    Addresses,
    ClusterError,
    ClusterSpec,
    ComponentSpec,
    EmbeddedCluster,
    LinkSpec,
    TcpReady,
    mesh_links,
)
from pytest_operator._netfilter import NetSlot
from pytest_operator._process import port_is_open
from pytest_operator._topology import ComponentKind, Link

from .mesh import (
    PYTHON,
    connectivity,
    heard,
    iptables_lines,
    mesh_spec,
    open_base,
    owner_of,
    pairs,
    uid_of,
)

pytestmark = pytest.mark.slow

MEMBERS = ("m-1", "m-2", "m-3")


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with open_base() as path:
        yield path


@pytest.fixture(scope="module")
async def cluster(base: Path) -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(mesh_spec(3), base_dir=base) as c:
        yield c


def sleeper(
    name: str, *, own_host: bool = False, ports: tuple[str, ...] = (), observer: bool = False
) -> ComponentSpec:
    """A component that listens on its main port (a tiny TCP server, standard library)."""
    code = (
        "import socket,sys,time;s=socket.socket();"
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        "s.bind((sys.argv[1],int(sys.argv[2])));s.listen();time.sleep(3600)"
    )

    def command(a: Addresses) -> list[str]:
        return [PYTHON, "-c", code, a.host(name), str(a.port(name))]

    return ComponentSpec(
        name,
        ComponentKind.SERVICE,
        command,
        ready=TcpReady(),
        own_host=own_host,
        ports=ports,
        observer=observer,
    )


async def test_members_get_own_hosts_uids_and_named_ports(cluster: EmbeddedCluster) -> None:
    assert cluster.mesh() == MEMBERS
    hosts = [cluster.host(m) for m in MEMBERS]
    assert len(set(hosts)) == 3
    assert all(ipaddress.ip_address(h) in ipaddress.ip_network("127.0.0.0/8") for h in hosts)
    assert all(h != "127.0.0.1" for h in hosts)
    uids = [cluster.uid(m) for m in MEMBERS]
    assert len(set(uids)) == 3 and all(u is not None and u >= 1_000_000 for u in uids)
    for m in MEMBERS:
        main, peer = cluster.address(m), cluster.address(m, "peer")
        assert main.host == peer.host == cluster.host(m)
        assert main.port != peer.port
        assert cluster.addresses.port(m, "peer") == peer.port
        assert cluster.addresses.address(m) == main
        assert port_is_open(main.port, main.host)
        proc = cluster.process(m)
        assert proc.pid is not None and uid_of(proc.pid) == cluster.uid(m)
        assert owner_of(cluster.addresses.data_dir(m)) == cluster.uid(m)
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
        body = (await http.get(cluster.address("m-2").url(path="/"))).json()
    assert body["uid"] == cluster.uid("m-2")


async def test_every_member_hears_every_peer_from_its_own_host(cluster: EmbeddedCluster) -> None:
    assert await connectivity(cluster) == pairs(MEMBERS)
    # each member sends from an unbound socket (source 127.0.0.1): the run's SNAT rule
    # is what makes its pings arrive from its own host
    sources = (await heard(cluster)).sources
    assert sources == {(s, r): cluster.host(s) for s, r in pairs(MEMBERS)}


async def test_snat_rules_carry_the_runs_comment(cluster: EmbeddedCluster) -> None:
    comment = cluster.netfilter.comment
    assert comment.startswith("pytest-operator owner=")
    nat = iptables_lines(comment)
    assert len(nat) == 3
    for m in MEMBERS:
        assert any(f"--uid-owner {cluster.uid(m)}" in r and cluster.host(m) in r for r in nat)
    assert len(cluster.netfilter.rules()) == 3


async def test_the_client_reaches_members_through_toxiproxy(cluster: EmbeddedCluster) -> None:
    proxies = await cluster.toxiproxy.proxies()
    assert sorted(proxies) == [f"client->{m}" for m in MEMBERS]  # none for the direct links
    assert proxies["client->m-1"].upstream == str(cluster.address("m-1"))
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
        body = (await http.get(cluster.client_url("m-3", "/"))).json()
    assert body["name"] == "m-3"


async def test_topology_has_direct_links_and_peers(cluster: EmbeddedCluster) -> None:
    topo = cluster.topology()
    assert topo.link("m-1", "m-2") == Link("m-1", "m-2", None)
    assert topo.link("m-2", "m-1") == Link("m-2", "m-1", None)
    assert topo.link(CLIENT, "m-1") == Link(CLIENT, "m-1", "client->m-1")
    assert topo.peers("m-2") == ("m-1", "m-3")
    assert topo.peers(CLIENT) == ()


async def test_lookups_name_the_valid_choices(cluster: EmbeddedCluster) -> None:
    with pytest.raises(KeyError, match=r"component 'm-1' has no port 'raft' \(ports: main, peer\)"):
        cluster.address("m-1", "raft")
    with pytest.raises(KeyError, match=r"link m-1 -> m-2 is direct \(no proxy\)"):
        cluster.proxy_address("m-1", "m-2")
    with pytest.raises(KeyError, match=r"link m-1 -> m-2 is direct: it has no proxy"):
        cluster.proxy_name("m-1", "m-2")
    with pytest.raises(KeyError, match=r"no component 'm-9' \(components: m-1, m-2, m-3\)"):
        cluster.host("m-9")


async def test_restart_with_wipe_gives_the_data_dir_back_to_the_member(
    cluster: EmbeddedCluster,
) -> None:
    data = cluster.addresses.data_dir("m-2")
    (data / "marker").write_text("x")
    await cluster.restart("m-2", wipe=True)
    assert not (data / "marker").exists()
    assert owner_of(data) == cluster.uid("m-2")


def test_spec_errors_name_the_link_and_the_fix() -> None:
    names = ["a", "b"]
    comps = tuple(sleeper(n) for n in names)
    with pytest.raises(ClusterError, match=r"^link client->a is direct, but 'client' "):
        ClusterSpec(comps, (LinkSpec(CLIENT, "a", direct=True),))
    with pytest.raises(ClusterError, match=r"^mesh_links: duplicate names: a$"):
        mesh_links(["a", "b", "a"])
    with pytest.raises(ClusterError, match=r"^component 'a': extra port names must be distinct"):
        ClusterSpec((sleeper("a", ports=("main",)),))
    with pytest.raises(ClusterError, match=r"^component 'a': extra port names must be distinct"):
        ClusterSpec((sleeper("a", ports=("x", "x")),))
    observer = sleeper("obs", observer=True)
    with pytest.raises(ClusterError, match=r"^link a->obs: 'obs' is an observer"):
        ClusterSpec((*comps, observer), mesh_links(["a", "obs"]))
    assert mesh_links(names) == (LinkSpec("a", "b", direct=True), LinkSpec("b", "a", direct=True))


async def test_own_host_without_a_mesh_needs_no_rules() -> None:
    spec = ClusterSpec((sleeper("a", own_host=True), sleeper("b")))
    with open_base() as base:
        async with EmbeddedCluster(spec, base_dir=base) as c:
            assert c.host("b") == "127.0.0.1"
            assert c.host("a") != "127.0.0.1"
            assert port_is_open(c.address("a").port, c.host("a"))
            assert c.uid("a") is None and c.mesh() == ()
            with pytest.raises(ClusterError, match=r"^this cluster has no direct links"):
                c.netfilter  # noqa: B018 (the property raises)


async def test_two_clusters_at_once_get_disjoint_hosts_and_uids() -> None:
    with open_base() as base:
        async with (
            EmbeddedCluster(mesh_spec(2), base_dir=base) as one,
            EmbeddedCluster(mesh_spec(2), base_dir=base) as two,
        ):
            names = one.mesh()
            assert {one.host(n) for n in names}.isdisjoint({two.host(n) for n in names})
            assert {one.uid(n) for n in names}.isdisjoint({two.uid(n) for n in names})
            assert one.netfilter.comment != two.netfilter.comment
            assert await connectivity(one) == pairs(names)
            assert await connectivity(two) == pairs(names)
            comments = (one.netfilter.comment, two.netfilter.comment)
        assert [iptables_lines(c) for c in comments] == [[], []]


async def test_stop_removes_every_rule_and_frees_the_slot() -> None:
    with open_base() as base:
        cluster = EmbeddedCluster(mesh_spec(2), base_dir=base)
        await cluster.start()
        comment = cluster.netfilter.comment
        slot = cluster.netfilter.slot.index
        assert len(iptables_lines(comment)) == 2
        await cluster.stop()
        assert iptables_lines(comment) == []
        await cluster.stop()  # idempotent
        again = NetSlot.acquire()
        try:
            assert again.index <= slot  # the slot is free again (lowest free one wins)
        finally:
            again.release()


async def test_a_run_dir_members_cannot_reach_is_a_clear_error(tmp_path: Path) -> None:
    # pytest's tmp_path lives under /tmp/pytest-of-root, mode 0700
    cluster = EmbeddedCluster(mesh_spec(2), base_dir=tmp_path)
    with pytest.raises(ClusterError) as err:
        await cluster.start()
    message = str(err.value)
    assert message.startswith("the mesh members (m-1, m-2) run as their own uids and cannot ")
    assert "use a base_dir that every user can traverse (o+x)" in message
    assert not cluster.running


async def test_no_iptables_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without iptables (really)
    cluster = EmbeddedCluster(mesh_spec(2), base_dir=tmp_path, toxiproxy_server="/bin/false")
    with pytest.raises(ClusterError) as err:
        await cluster.start()
    assert str(err.value) == (
        "the direct links between m-1, m-2 are cut with iptables rules, which need root and "
        "iptables: iptables is not installed (apt-get install iptables)"
    )


async def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a test double for the uid: this suite runs as root, and the check reads geteuid()
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    cluster = EmbeddedCluster(mesh_spec(2), base_dir=tmp_path, toxiproxy_server="/bin/false")
    with pytest.raises(ClusterError, match=r"which need root and iptables: they need root \("):
        await cluster.start()
