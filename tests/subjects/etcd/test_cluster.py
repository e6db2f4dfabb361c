"""A real 3-member etcd cluster: it starts, the observer reads it, the requester writes
and reads through the client links, and faults show as etcd really behaves."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import httpx
import pytest
import pytest_asyncio

from pytest_operator import (
    ActionError,
    ChaosUnsupported,
    Risk,
    Workload,
    clock_skew,
    register_ops,
    steady,
)
from pytest_operator._cluster import EmbeddedCluster
from pytest_operator._history import History, OpKind, Outcome
from pytest_operator._invariants import Finding
from pytest_operator._monitor import wait_healthy
from pytest_operator._signals import Observation, ProbeFailure, Role
from pytest_operator._workload import Call, Response
from subjects.etcd import subject
from subjects.etcd.adapter import EtcdSession
from subjects.etcd.client import KEY_PREFIX, EtcdClient
from subjects.etcd.invariants import member_down, no_leader, split_brain
from subjects.etcd.observe import METRICS, parse_metrics
from tests.subjects.etcd.conftest import MEMBERS, WAIT

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(loop_scope="session")
async def session(cluster: EmbeddedCluster) -> AsyncIterator[EtcdSession]:
    await cluster.reset()  # heal whatever the previous test did
    s = subject.open(cluster, subject.configure(3, {}), History())
    try:
        await wait_healthy(s.observe, timeout=WAIT)
        yield s
    finally:
        await s.aclose()


async def until(
    observe: Callable[[], Awaitable[Observation]],
    ok: Callable[[Observation], bool],
    timeout: float = WAIT,
) -> Observation:
    """Observe until ``ok`` holds (bounded); fails with the last observation."""
    deadline = time.monotonic() + timeout
    obs = await observe()
    while not ok(obs):
        if time.monotonic() > deadline:
            pytest.fail(f"not seen within {timeout:g} s; last: {describe(obs)}")
        await asyncio.sleep(0.2)
        obs = await observe()
    return obs


def describe(obs: Observation) -> str:
    parts = [
        f"{c.component}:{'up' if c.reachable else c.probe_failure}/{c.role}/t{c.term}"
        f"/leader={c.leader}/q={c.quorum}"
        for c in obs.components
    ]
    parts += [f"{lk.source}->{lk.target}=down" for lk in obs.links if lk.up is False]
    return " ".join(parts)


def leaders(obs: Observation) -> list[str]:
    return [c.component for c in obs.components if c.role is Role.LEADER]


def settled(obs: Observation) -> bool:
    """One leader that every member follows, every member with quorum, no link down."""
    return (
        len(leaders(obs)) == 1
        and all(c.reachable and c.quorum and c.leader == leaders(obs)[0] for c in obs.components)
        and not any(lk.up is False for lk in obs.links)
    )


def names(findings: Sequence[Finding]) -> set[str]:
    return {f.component for f in findings}


async def test_three_members_start_and_exactly_one_leads(
    cluster: EmbeddedCluster, session: EtcdSession
) -> None:
    assert cluster.ready_seconds is not None and cluster.ready_seconds < WAIT
    hosts = {cluster.host(m) for m in MEMBERS}
    assert len(hosts) == 3 and "127.0.0.1" not in hosts  # each member on its own address
    obs = await until(session.observe, settled)
    (leader,) = leaders(obs)
    terms = {c.term for c in obs.components}
    assert len(terms) == 1 and terms.pop() is not None
    for c in obs.components:
        assert c.ready is True and c.probe_failure is None
        assert c.role is (Role.LEADER if c.component == leader else Role.FOLLOWER)
        assert c.started_at is not None and 0 <= time.time() - c.started_at < 3600
    mesh = {(lk.source, lk.target) for lk in obs.links if lk.source in MEMBERS}
    assert mesh == {(a, b) for a in MEMBERS for b in MEMBERS if a != b}
    assert all(lk.up is True for lk in obs.links if lk.source in MEMBERS)
    assert not member_down(obs) and not no_leader(obs) and not split_brain(obs)
    assert session.targets == MEMBERS
    assert {c.name for c in session.topology.components} >= set(MEMBERS)


async def test_metrics_of_a_real_member_parse_to_the_series_the_observer_reads(
    cluster: EmbeddedCluster,
) -> None:
    async with httpx.AsyncClient(timeout=5.0) as http:
        page = (await http.get(cluster.address("etcd-1").url(path="/metrics"))).text
    scrape = parse_metrics(page, time.time())
    found = {name for name, _ in scrape.samples}
    # every series the observer reads exists in etcd 3.4; the peer round trip only once
    # etcd has reported its first probe of each peer (a few seconds after the start)
    rtt = {m for m in METRICS if "round_trip" in m}
    assert found in (set(METRICS), set(METRICS) - rtt), found
    assert scrape.value("etcd_server_is_learner") == 0
    assert scrape.value("etcd_server_has_leader") == 1
    assert len(scrape.label_values("etcd_network_active_peers", "Remote")) == 2


async def test_the_requester_writes_and_reads_through_the_client_links_and_reset_clears(
    cluster: EmbeddedCluster, session: EtcdSession
) -> None:
    requester = session.requester()
    assert isinstance(requester, EtcdClient) and not requester.serializable
    for m in MEMBERS:  # through the proxy, not the member's own address
        assert requester.urls[m] == cluster.client_url(m) != cluster.address(m).url()
    for m in MEMBERS:
        assert await requester(m, Call(f"k-{m}", OpKind.WRITE, m)) == Response(Outcome.OK)
        assert await requester(m, Call(f"k-{m}", OpKind.READ)) == Response(Outcome.OK, result=m)
    stored = await read_prefix(cluster, "etcd-3")
    assert stored == {f"{KEY_PREFIX}k-{m}": m for m in MEMBERS}
    assert (await requester.put("etcd-2", "k-x", "7")).outcome is Outcome.OK
    assert (await read_prefix(cluster, "etcd-1"))[f"{KEY_PREFIX}k-x"] == "7"
    await session.reset()
    assert await read_prefix(cluster, "etcd-1") == {}
    with pytest.raises(ValueError, match="unknown target 'etcd-9'"):
        await requester("etcd-9", Call("k", OpKind.READ))


async def read_prefix(cluster: EmbeddedCluster, member: str) -> dict[str, str]:
    body = {
        "key": base64.b64encode(KEY_PREFIX.encode()).decode(),
        "range_end": base64.b64encode(KEY_PREFIX[:-1].encode() + b"0").decode(),
    }
    async with httpx.AsyncClient(timeout=5.0) as http:
        url = cluster.address(member).url(path="/v3/kv/range")
        reply = (await http.post(url, content=json.dumps(body))).json()
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
        for kv in reply.get("kvs", [])
    }


async def test_a_killed_follower_is_refused_and_the_others_keep_their_leader(
    cluster: EmbeddedCluster, session: EtcdSession
) -> None:
    obs = await until(session.observe, settled)
    (leader,) = leaders(obs)
    victim = next(m for m in MEMBERS if m != leader)
    requester = session.requester()
    await cluster.process(victim).kill()
    obs = await until(
        session.observe,
        lambda o: (
            (c := o.component(victim)) is not None
            and not c.reachable
            and (lk := o.link(leader, victim)) is not None
            and lk.up is False
        ),
        timeout=10.0,
    )
    assert obs.component(victim).probe_failure is ProbeFailure.REFUSED  # type: ignore[union-attr]
    assert names(member_down(obs)) == {victim}
    assert not no_leader(obs) and leaders(obs) == [leader]
    reply = await requester(victim, Call("k", OpKind.READ))
    assert reply.outcome is Outcome.ERROR, reply
    other = next(m for m in MEMBERS if m not in (leader, victim))
    assert (await requester(other, Call("k", OpKind.WRITE, "1"))).outcome is Outcome.OK
    await cluster.reset()  # restarts it on its data: it rejoins as a follower
    obs = await until(session.observe, settled)
    assert leaders(obs) == [leader]


async def test_a_frozen_member_costs_one_probe_timeout_and_clients_time_out(
    cluster: EmbeddedCluster, session: EtcdSession
) -> None:
    obs = await until(session.observe, settled)
    (leader,) = leaders(obs)
    victim = next(m for m in MEMBERS if m != leader)
    requester = session.requester()
    cluster.process(victim).pause()
    try:
        started = time.monotonic()
        obs = await session.observe()
        assert time.monotonic() - started < 2.5  # a 0.5 s cap, with room for a loaded box
        c = obs.component(victim)
        assert c is not None and not c.reachable and c.probe_failure is ProbeFailure.TIMEOUT
        started = time.monotonic()
        reply = await requester(victim, Call("k", OpKind.WRITE, "1"))
        assert reply.outcome is Outcome.TIMEOUT, reply  # it may still commit: indeterminate
        assert time.monotonic() - started < 3.0
        # the leader hears nothing from it: its link to the frozen member goes down
        await until(
            session.observe,
            lambda o: (lk := o.link(leader, victim)) is not None and lk.up is False,
            timeout=10.0,
        )
    finally:
        cluster.process(victim).resume()
    await until(session.observe, settled)


async def test_an_isolated_leader_steps_down_and_the_majority_elects_another(
    cluster: EmbeddedCluster, session: EtcdSession
) -> None:
    obs = await until(session.observe, settled)
    (old,) = leaders(obs)
    term = obs.component(old).term  # type: ignore[union-attr]
    assert term is not None
    others = [m for m in MEMBERS if m != old]
    net = cluster.netfilter
    began = time.monotonic()
    for peer in others:
        net.drop(cluster.host(old), cluster.host(peer), "test")
        net.drop(cluster.host(peer), cluster.host(old), "test")
    try:

        def isolated(o: Observation) -> bool:
            c = o.component(old)
            new = [n for n in leaders(o) if n != old]
            return (
                c is not None
                and c.reachable  # it still answers the monitor
                and c.quorum is False
                and len(new) == 1
                and all((lk := o.link(old, p)) is not None and lk.up is False for p in others)
                and all((lk := o.link(p, old)) is not None and lk.up is False for p in others)
            )

        obs = await until(session.observe, isolated, timeout=15.0)
        seen_after = time.monotonic() - began
        (new,) = [n for n in leaders(obs) if n != old]
        assert obs.component(new).term > term  # type: ignore[union-attr, operator]
        assert old in names(no_leader(obs))
        assert not split_brain(obs)
        print(f"isolation seen after {seen_after:.2f} s: {describe(obs)}")
    finally:
        net.clear_drops()
    await until(session.observe, settled, timeout=WAIT)


async def test_transfer_leadership_moves_the_leader_and_the_change_is_flagged(
    cluster: EmbeddedCluster, session: EtcdSession
) -> None:
    obs = await until(session.observe, settled)
    (old,) = leaders(obs)
    target = next(m for m in MEMBERS if m != old)
    action = next(a for a in session.actions if a.name == "transfer_leadership")
    assert action.risk is Risk.MEDIUM
    assert action.idempotent and action.timeout == 10.0  # the runner may retry it
    message = await action.run(action.validate({"member": target}))
    assert message == f"leadership moved from {old} to {target}"
    obs = await until(session.observe, lambda o: settled(o) and leaders(o) == [target])
    changed = leader_change_check(session)(obs)
    assert names(changed) == set(MEMBERS), changed  # every member saw a new leader
    assert await action.run(action.validate({"member": target})) == f"{target} already leads"
    with pytest.raises(ActionError, match="member=etcd-9: invalid value"):
        action.validate({"member": "etcd-9"})


async def test_restart_member_brings_it_back_as_a_follower(
    cluster: EmbeddedCluster, session: EtcdSession
) -> None:
    obs = await until(session.observe, settled)
    (lead,) = leaders(obs)
    member = next(m for m in MEMBERS if m != lead)
    before = obs.component(member).started_at  # type: ignore[union-attr]
    action = next(a for a in session.actions if a.name == "restart_member")
    assert action.risk is Risk.HIGH
    assert not action.idempotent  # never retried after a failure that may have stopped it
    assert await action.run(action.validate({"member": member})) == f"{member} restarted"
    obs = await until(session.observe, settled)
    after = obs.component(member)
    assert after is not None and after.role is Role.FOLLOWER
    assert after.started_at is not None and before is not None and after.started_at > before


async def test_a_cut_client_link_fails_that_members_requests_only(
    cluster: EmbeddedCluster, session: EtcdSession
) -> None:
    requester = session.requester()
    proxy = cluster.proxy_name("client", "etcd-1")
    await cluster.toxiproxy.disable(proxy)
    try:
        reply = await requester("etcd-1", Call("k", OpKind.WRITE, "1"))
        assert reply.outcome is Outcome.ERROR, reply  # refused: it surely never left
        assert (await requester("etcd-2", Call("k", OpKind.WRITE, "2"))).outcome is Outcome.OK
        obs = await session.observe()  # the monitor reaches etcd-1 directly: still up
        assert obs.component("etcd-1").reachable  # type: ignore[union-attr]
    finally:
        await cluster.toxiproxy.enable(proxy)
    assert (await requester("etcd-1", Call("k", OpKind.READ))) == Response(Outcome.OK, result="2")


def leader_change_check(session: EtcdSession) -> Callable[[Observation], Sequence[Finding]]:
    return next(i.check for i in session.invariants if i.name == "leader_change")


async def test_clock_skew_on_a_member_is_refused_naming_why(cluster: EmbeddedCluster) -> None:
    with pytest.raises(ChaosUnsupported, match="Go reads the clock through the vDSO"):
        async with clock_skew("etcd-2", 30).inject(cluster):
            pytest.fail("the skew was injected")


async def test_one_observation_is_bounded_even_with_every_member_frozen(
    cluster: EmbeddedCluster,
) -> None:
    fresh = subject.open(cluster, subject.configure(3, {}), History())  # knows no member ID
    try:
        for m in MEMBERS:
            cluster.process(m).pause()
        try:
            for _ in range(2):
                started = time.monotonic()
                obs = await fresh.observe()
                assert time.monotonic() - started < 3.0
                assert {c.probe_failure for c in obs.components} == {ProbeFailure.TIMEOUT}
        finally:
            for m in MEMBERS:
                cluster.process(m).resume()
        await until(fresh.observe, settled)
    finally:
        await fresh.aclose()


async def test_a_stale_read_at_an_isolated_follower_is_a_linearizable_violation_there(
    cluster: EmbeddedCluster,
) -> None:
    await cluster.reset()
    history = History()
    s = subject.open(cluster, subject.configure(3, {"reads": "serializable"}), history)
    net = cluster.netfilter
    try:
        obs = await until(s.observe, settled)
        assert obs.safety == ()
        (leader,) = leaders(obs)
        cut = next(m for m in MEMBERS if m != leader)
        majority = [m for m in MEMBERS if m != cut]
        for peer in majority:
            net.drop(cluster.host(cut), cluster.host(peer), "test")
            net.drop(cluster.host(peer), cluster.host(cut), "test")
        ops = register_ops(0.5, 0.1, 0.4, reads_on=[cut], writes_on=majority)
        keys = [f"stale-{uuid.uuid4().hex[:8]}"]  # no earlier test wrote it
        async with Workload(s.requester(), s.targets, history) as workload:
            await workload.run(steady(rate=40), keys, duration=1.5, ops=ops)
        obs = await s.observe()
        blamed = {c for v in obs.safety if v.property == "linearizable" for c in v.components}
        assert cut in blamed, obs.safety
        (linearizable,) = [i for i in s.invariants if i.name == "linearizable"]
        findings = linearizable.check(obs)
        assert cut in names(findings) and all(f.message for f in findings)
        reads = [op for op in history.snapshot() if op.kind == OpKind.READ]
        assert reads and all(op.target == cut and op.result is None for op in reads)
    finally:
        net.clear_drops()
        await s.aclose()
