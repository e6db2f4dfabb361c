"""Network faults on a real mesh: five stand-in members (tests/cluster/mesh_member.py) on
direct links, each on its own host and uid, pinging every peer over UDP. partition, isolate
and split cut exactly the pairs they name (one_way only one way), heals and reset restore
every pair and remove exactly the rules the fault added, selectors resolve from an
observation. The members and iptables are real; only the subject's observation (the roles)
is a test double, since a stand-in member has no consensus to report."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._chaos import (
    Chaos,
    ChaosTarget,
    ChaosUnsupported,
    Fault,
    Isolate,
    Observed,
    Partition,
    Split,
    clock_skew,
    compose,
    follower,
    isolate,
    kill,
    latency,
    leader,
    partition,
    pause,
    split,
    split_minority,
    split_no_quorum,
)
from pytest_operator._cluster import CLIENT, ClusterError, EmbeddedCluster
from pytest_operator._selectors import SelectorError
from pytest_operator._signals import ComponentSignals, Observation, Role
from tests.cluster.mesh import between, connectivity, iptables_lines, mesh_spec, open_base, pairs

pytestmark = pytest.mark.slow

MEMBERS = ("m-1", "m-2", "m-3", "m-4", "m-5")
ALL = pairs(MEMBERS)
NOTE = "a stand-in member: its clock cannot be skewed (test note)"


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with open_base() as path:
        yield path


@pytest.fixture(scope="module")
async def cluster(base: Path) -> AsyncIterator[EmbeddedCluster]:
    async with EmbeddedCluster(mesh_spec(5, clock_note=NOTE), base_dir=base) as c:
        yield c


@pytest.fixture(autouse=True)
async def _no_rule_left(cluster: EmbeddedCluster) -> AsyncIterator[None]:
    """Every test starts with the full mesh and ends with no drop rule (only the SNAT)."""
    yield
    drops = [line for line in iptables_lines(cluster.netfilter.comment) if " drop=" in line]
    leftover = cluster.netfilter.drops()
    await cluster.reset()
    assert (drops, leftover) == ([], ())
    assert len(iptables_lines(cluster.netfilter.comment)) == len(MEMBERS)  # SNAT only


@dataclass(frozen=True, slots=True)
class Failing(Fault):
    """A fault whose injection fails (after the faults composed before it were applied)."""

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.CRASH, "m-1"),)

    def describe(self) -> str:
        return "failing()"

    async def _apply(self, target: ChaosTarget) -> None:
        raise RuntimeError("cannot apply")

    async def _heal(self, target: ChaosTarget) -> None:
        return None


def drop_rules(cluster: EmbeddedCluster) -> list[str]:
    """The run's drop rules, one per direction cut (each has a twin for the answers on
    connections the other side opened, matched by conntrack's reply tuple)."""
    lines = [line for line in iptables_lines(cluster.netfilter.comment) if " drop=" in line]
    plain = [line for line in lines if " -s " in line]
    answers = [line for line in lines if "--ctdir REPLY" in line]
    assert len(answers) == len(plain) and len(lines) == 2 * len(plain), lines
    return plain


def observation(leader_: str | None, *, claim: tuple[str, ...] = ()) -> Observation:
    """Every member reachable; ``leader_`` leads and the others follow it; members in
    ``claim`` also say they lead (and follow no one)."""
    signals = []
    for m in MEMBERS:
        if m == leader_ or m in claim:
            signals.append(ComponentSignals(m, True, role=Role.LEADER, term=3, leader=m))
        else:
            signals.append(ComponentSignals(m, True, role=Role.FOLLOWER, term=3, leader=leader_))
    return Observation(at=0.0, components=tuple(signals))


def observed(cluster: EmbeddedCluster, obs: Observation) -> Observed:
    """The cluster, observed through a test double of the subject session."""

    async def observe() -> Observation:
        return obs

    return Observed(cluster, observe)


async def test_partition_cuts_the_pair_both_ways_and_heals(cluster: EmbeddedCluster) -> None:
    async with partition("m-1", "m-2").inject(cluster) as injection:
        assert await connectivity(cluster) == ALL - between(["m-1"], ["m-2"])
        assert len(drop_rules(cluster)) == 2
        assert injection.fault.root_causes == (RootCause(FaultKind.PARTITION, "m-1", "m-2"),)
    assert drop_rules(cluster) == []
    assert await connectivity(cluster) == ALL


async def test_one_way_partition_cuts_one_direction_only(cluster: EmbeddedCluster) -> None:
    async with Chaos(cluster).partition("m-1", "m-2", one_way=True) as injection:
        assert await connectivity(cluster) == ALL - {("m-1", "m-2")}
        assert len(drop_rules(cluster)) == 1
        assert injection.fault.describe() == "partition(m-1 -> m-2, one way)"
    assert await connectivity(cluster) == ALL


async def test_isolate_cuts_a_member_from_every_peer(cluster: EmbeddedCluster) -> None:
    async with isolate("m-3").inject(cluster) as injection:
        assert await connectivity(cluster) == ALL - between(["m-3"], ["m-1", "m-2", "m-4", "m-5"])
        assert len(drop_rules(cluster)) == 8
        assert injection.fault.root_causes == (RootCause(FaultKind.ISOLATION, "m-3"),)
        # an isolated member still answers the monitor (which connects from 127.0.0.1)
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
            assert (await http.get(cluster.address("m-3").url(path="/"))).status_code == 200
    assert await connectivity(cluster) == ALL


async def test_split_cuts_between_groups_only(cluster: EmbeddedCluster) -> None:
    minority, majority = ["m-1", "m-2"], ["m-3", "m-4", "m-5"]
    async with Chaos(cluster).split(majority, minority) as injection:
        assert await connectivity(cluster) == ALL - between(minority, majority)
        assert len(drop_rules(cluster)) == 2 * 2 * 3
        assert injection.fault.root_causes == (RootCause(FaultKind.SPLIT, "m-1+m-2|m-3+m-4+m-5"),)
    assert await connectivity(cluster) == ALL


async def test_split_no_quorum_leaves_no_majority(cluster: EmbeddedCluster) -> None:
    async with split_no_quorum().inject(cluster) as injection:
        assert injection.fault == Split((("m-1", "m-2"), ("m-3", "m-4"), ("m-5",)))
        within = {("m-1", "m-2"), ("m-2", "m-1"), ("m-3", "m-4"), ("m-4", "m-3")}
        assert await connectivity(cluster) == within
        assert injection.fault.root_causes == (RootCause(FaultKind.SPLIT, "m-1+m-2|m-3+m-4|m-5"),)
    assert await connectivity(cluster) == ALL


async def test_a_heal_removes_exactly_its_own_rules(cluster: EmbeddedCluster) -> None:
    # the isolation and the partition both drop m-1 -> m-2: healing the partition must
    # leave the isolation's rule in place
    others = ["m-2", "m-3", "m-4", "m-5"]
    async with isolate("m-1").inject(cluster):
        async with partition("m-1", "m-2").inject(cluster):
            assert len(drop_rules(cluster)) == 8 + 2
        assert len(drop_rules(cluster)) == 8
        assert await connectivity(cluster) == ALL - between(["m-1"], others)
    assert await connectivity(cluster) == ALL


async def test_heals_are_idempotent(cluster: EmbeddedCluster) -> None:
    for fault in (partition("m-4", "m-5"), isolate("m-4"), split(["m-4"], ["m-5"])):
        bound = await fault.bind(cluster)
        await bound._apply(cluster)
        assert drop_rules(cluster) != []
        await bound._heal(cluster)
        await bound._heal(cluster)  # a second heal finds nothing to do
        assert drop_rules(cluster) == []
    # a composition that fails half-way heals what it applied, then heals everything again
    with pytest.raises(RuntimeError, match=r"^cannot apply$"):
        async with compose(isolate("m-2"), Failing()).inject(cluster):
            pass
    assert drop_rules(cluster) == []


async def test_reset_removes_every_drop(cluster: EmbeddedCluster) -> None:
    bound = await split(["m-1", "m-2", "m-3"], ["m-4", "m-5"]).bind(cluster)
    await bound._apply(cluster)  # injected and never healed, as by a crashed scenario
    assert len(drop_rules(cluster)) == 12
    await cluster.reset()
    assert drop_rules(cluster) == []
    assert await connectivity(cluster) == ALL
    await bound._heal(cluster)  # healing after the reset is harmless


async def test_selectors_resolve_from_the_observation(cluster: EmbeddedCluster) -> None:
    target = observed(cluster, observation("m-2"))
    async with isolate(leader()).inject(target) as injection:
        assert injection.fault == Isolate("m-2")
        assert injection.root_cause == RootCause(FaultKind.ISOLATION, "m-2")
        assert await connectivity(cluster) == ALL - between(["m-2"], ["m-1", "m-3", "m-4", "m-5"])
    async with Chaos(target).partition(leader(), follower(1)) as injection:
        assert injection.fault == Partition("m-2", "m-3")  # followers m-1, m-3, m-4, m-5
    async with pause(follower(3)).inject(target) as injection:
        assert injection.root_cause == RootCause(FaultKind.PAUSE, "m-5")
        assert cluster.process("m-5").paused
    assert not cluster.process("m-5").paused


async def test_split_minority_cuts_followers_off_the_leaders_majority(
    cluster: EmbeddedCluster,
) -> None:
    target = observed(cluster, observation("m-2"))
    async with split_minority().inject(target) as injection:
        # five members: a minority of two followers (spec order), the leader in the rest
        assert injection.fault == Split((("m-1", "m-3"), ("m-2", "m-4", "m-5")))
        assert injection.root_cause == RootCause(FaultKind.SPLIT, "m-1+m-3|m-2+m-4+m-5")
        assert await connectivity(cluster) == ALL - between(["m-1", "m-3"], ["m-2", "m-4", "m-5"])
    assert await connectivity(cluster) == ALL


async def test_no_agreed_leader_is_a_clear_error(cluster: EmbeddedCluster) -> None:
    # two members claim the lead and the others see none: no majority agrees on anyone
    target = observed(cluster, observation(None, claim=("m-1", "m-4")))
    with pytest.raises(SelectorError) as err:
        async with kill(leader(timeout=0.6)).inject(target):
            pass
    message = str(err.value)
    assert message.startswith("leader(): no leader agreed by a majority within 0.6 s; last seen: ")
    assert "m-1=leader(leader m-1, term 3) m-2=follower(leader None, term 3)" in message
    assert all(cluster.process(m).alive for m in MEMBERS)
    with pytest.raises(SelectorError, match=r"^follower\(4\): fewer than 5 follower"):
        await follower(4, timeout=0.3).resolve(observed(cluster, observation("m-1")))


async def test_the_cluster_alone_cannot_resolve_a_selector(cluster: EmbeddedCluster) -> None:
    with pytest.raises(ClusterError, match=r"^leader\(\) and follower\(\) are resolved from"):
        async with isolate(leader()).inject(cluster):
            pass


async def test_what_a_mesh_cannot_do_is_refused(cluster: EmbeddedCluster) -> None:
    with pytest.raises(ChaosUnsupported) as err:
        async with clock_skew("m-1", 30).inject(cluster):
            pass
    assert str(err.value) == NOTE
    with pytest.raises(ChaosUnsupported, match=r"^the link between m-1 and m-2 is direct"):
        async with latency("m-1", "m-2", 100).inject(cluster):
            pass
    with pytest.raises(ChaosUnsupported, match=r"a one-way cut needs a direct link"):
        async with partition(CLIENT, "m-1", one_way=True).inject(cluster):
            pass
    with pytest.raises(ChaosUnsupported, match=r"^isolate\(client\): client is not a mesh member"):
        async with isolate(CLIENT).inject(cluster):
            pass
    assert drop_rules(cluster) == []


async def test_a_toxiproxy_link_is_partitioned_as_before(cluster: EmbeddedCluster) -> None:
    url = cluster.client_url("m-1", "/")
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as http:
        async with partition(CLIENT, "m-1").inject(cluster):
            assert not (await cluster.toxiproxy.get_proxy("client->m-1")).enabled
            with pytest.raises(httpx.HTTPError):
                await http.get(url)
            assert drop_rules(cluster) == []
        assert (await http.get(url)).status_code == 200


async def test_the_facade_records_the_bound_fault(cluster: EmbeddedCluster) -> None:
    # the plugin's chaos fixture wraps the cluster like this, with the session's observe
    chaos = Chaos(observed(cluster, observation("m-4")))
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(chaos.isolate(leader()))
        second = await stack.enter_async_context(chaos.split_no_quorum())
        assert first.fault == Isolate("m-4")
        assert isinstance(second.fault, Split)
    assert drop_rules(cluster) == []
