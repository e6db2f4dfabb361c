"""Synthetic timelines of a Raft group under one fault, for the causal engine's tests.

The cases are built by :class:`Raft` below from what a real Raft cluster
shows (etcd 3.4 without pre-vote, election timeout ~1 s): after its leader stops, a
follower keeps the old leader's id for an election timeout, then a new term starts
and a new leader appears among the members that still form a majority; an isolated
leader steps down after an election timeout (CheckQuorum) and then sees no leader
while its term keeps rising; a member cut off from the majority sees no leader and
campaigns alone, raising its term each timeout, and with CheckQuorum the members that
still hear their leader ignore its vote requests (the leader's lease), so their term
stays; a killed member refuses the probe, a paused one times out. Link reports: the
peers of a killed member see their links to it fail at once (connection refused); the
leader and a follower, which talk every heartbeat, see each other fall silent within
0.8 s; any other cut shows only after ``link_lag`` (5 s by default: the peer streams'
read timeout).

The monitor starts just after the fault (as the ``chaos`` marker injects before the
test body), polls every 0.25 s, and stops ``settle`` s after the first violation is
confirmed, as ``operator.monitor(until=...)`` does. Invariants: a member down, a
member without quorum, writes through a member failing, and a mesh link down, each
confirmed after a grace period, all in the availability category.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_operator._diagnosis import Case
from pytest_operator._invariants import Category, Violation
from pytest_operator._signals import (
    ComponentSignals,
    LinkSignals,
    Observation,
    ProbeFailure,
    Role,
)
from pytest_operator._topology import Component, ComponentKind, Link, Topology

T0 = 1_700_000_000.0
TICK = 0.25
ELECTION = 1.0
"""Election timeout: a follower that hears no leader for this long campaigns."""
VOTE = 0.3
"""How long an election takes once a majority can vote."""
GRACE = 0.5
FAST = 0.8
"""How soon the leader and a follower notice each other's silence (8 heartbeats)."""


def names(n: int) -> tuple[str, ...]:
    return tuple(f"db-{i}" for i in range(1, n + 1))


def topology(members: Sequence[str]) -> Topology:
    components = (
        *(Component(m, ComponentKind.DATASTORE, m) for m in members),
        Component("client", ComponentKind.CLIENT),
    )
    mesh = tuple(Link(a, b) for a in members for b in members if a != b)
    clients = tuple(Link("client", m, f"client_{m}") for m in members)
    return Topology(components, mesh + clients)


@dataclass(frozen=True, slots=True)
class State:
    """One member at one moment, as it would report itself (None: it does not answer)."""

    probe: ProbeFailure | None = None
    role: Role = Role.FOLLOWER
    term: int = 5
    leader: str | None = None


@dataclass(slots=True)
class Raft:
    """A Raft group's members over time under one fault (see the module docstring)."""

    n: int = 3
    fault: str = "none"
    """none, crash, pause, isolate, split, cut (a pair, both ways)."""
    target: tuple[str, ...] = ()
    """The member(s) the fault acts on (crash, pause, isolate: one; cut: a pair)."""
    groups: tuple[tuple[str, ...], ...] = ()
    leader: str = "db-1"
    step_down: float = 1.5
    """Seconds after the cut at which a leader without a majority steps down: CheckQuorum
    runs every election timeout, so between one and two of them. Until then it still
    says it leads (and, by its own word, has quorum)."""
    mesh_links: bool = True
    """Members report their links to one another."""
    fast_links: bool = True
    """A link between the leader and a follower is seen down within ``FAST`` s (they talk
    every heartbeat, so silence shows); any other only at ``link_lag``."""
    report_quorum: bool = True
    """Members say whether they can commit (else only role, term and leader)."""
    blip: str | None = None
    """A member whose probe times out once, at 0.5 s (a loaded machine)."""
    fault_at: float = -0.05
    """Seconds from the monitor's start (negative: injected before it started)."""
    link_lag: float = 5.0
    settle: float = 1.0
    until: str | None = None
    """The invariant whose confirmation ends the run (None: any)."""
    timeout: float = 15.0
    members: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.members = names(self.n)
        if self.fault == "isolate":
            self.groups = ((self.target[0],), tuple(m for m in self.members if m != self.target[0]))

    @property
    def majority(self) -> int:
        return self.n // 2 + 1

    def group_of(self, m: str) -> tuple[str, ...]:
        for g in self.groups:
            if m in g:
                return g
        return self.members

    def cut(self, a: str, b: str) -> bool:
        """Packets between a and b are dropped (either way)."""
        if self.fault in ("isolate", "split"):
            return self.group_of(a) != self.group_of(b)
        if self.fault == "cut":
            return {a, b} == set(self.target)
        return False

    def state(self, m: str, e: float) -> State:
        """Member ``m`` at ``e`` seconds after the fault (negative: before it)."""
        healthy = State(
            term=5, leader=self.leader, role=Role.LEADER if m == self.leader else Role.FOLLOWER
        )
        if e < 0 or self.fault == "none":
            return healthy
        if self.fault in ("crash", "pause") and m in self.target:
            return State(ProbeFailure.REFUSED if self.fault == "crash" else ProbeFailure.TIMEOUT)
        if self.fault in ("crash", "pause"):
            if self.leader not in self.target:
                return healthy
            return self._elect(m, e, [x for x in self.members if x not in self.target])
        if self.fault in ("isolate", "split"):
            group = list(self.group_of(m))
            if len(group) >= self.majority:
                if self.leader in group:
                    return healthy
                return self._elect(m, e, group)
            return self._alone(m, e)
        if self.fault == "cut":
            return self._churn(m, e)
        raise AssertionError(self.fault)

    def _elect(self, m: str, e: float, group: list[str]) -> State:
        """A majority group that lost its leader: the old id for an election timeout,
        then a vote, then the group's first member leads at the next term."""
        if e < ELECTION:
            return State(term=5, leader=self.leader)
        if e < ELECTION + VOTE:
            return State(role=Role.CANDIDATE, term=6)
        new = group[0]
        return State(role=Role.LEADER if m == new else Role.FOLLOWER, term=6, leader=new)

    def _alone(self, m: str, e: float) -> State:
        """A member of a group without a majority: a leader keeps leading until CheckQuorum
        (an election timeout), a follower keeps the leader's id as long; then no leader
        and a term that rises at each election timeout."""
        if m == self.leader:
            if e < self.step_down:
                return State(role=Role.LEADER, term=5, leader=m)
            rounds = int((e - self.step_down) / ELECTION)  # then campaigns, alone
            return State(role=Role.FOLLOWER if rounds < 1 else Role.CANDIDATE, term=5 + rounds)
        if e < ELECTION:
            return State(term=5, leader=self.leader)
        return State(role=Role.CANDIDATE, term=5 + int(e / ELECTION))

    def _churn(self, m: str, e: float) -> State:
        """A pair cut apart, the rest joined to both. With CheckQuorum a follower that hears
        its leader ignores a vote request (the leader's lease), so when the pair holds the
        leader, its other end campaigns alone, its term rising each election timeout,
        while everyone else keeps the leader and the term; two followers cut apart change
        nothing at all."""
        healthy = State(
            role=Role.LEADER if m == self.leader else Role.FOLLOWER, term=5, leader=self.leader
        )
        if self.leader not in self.target or m not in self.target or m == self.leader:
            return healthy
        if e < ELECTION:
            return healthy
        return State(role=Role.CANDIDATE, term=5 + int(e / ELECTION))

    def talk(self, a: str, b: str) -> bool:
        """a and b exchange messages all the time (the leader and a follower): each sees
        the other fall silent within ``FAST`` s, not at the stream timeout."""
        return self.fast_links and self.leader in (a, b)

    def link_down(self, a: str, b: str, e: float) -> bool:
        """a's report on its link to b, ``e`` s after the fault."""
        if e < 0:
            return False
        if self.fault == "crash" and b in self.target:
            return True  # connection refused at once
        silent = self.fault == "pause" and b in self.target
        if not (silent or self.cut(a, b)):
            return False
        return e >= (FAST if self.talk(a, b) else self.link_lag)

    def can_write(self, m: str, s: State, states: dict[str, State], e: float) -> bool:
        """A write through ``m`` commits: m answers, and the leader it forwards to answers,
        reaches m, and reaches a majority."""
        leader = s.leader
        if s.probe is not None or leader is None or states[leader].probe is not None:
            return False
        if e < 0 or self.cut(m, leader):
            return e < 0
        reached = [x for x in self.members if states[x].probe is None and not self.cut(leader, x)]
        return len(reached) >= self.majority

    def observe(self, t: float) -> Observation:
        e = t - self.fault_at
        states = {m: self.state(m, e) for m in self.members}
        comps = []
        for m, s in states.items():
            if m == self.blip and abs(t - 0.5) < 1e-9:
                comps.append(ComponentSignals(m, False, probe_failure=ProbeFailure.TIMEOUT))
                continue
            if s.probe is not None:
                comps.append(
                    ComponentSignals(
                        m, reachable=False, probe_failure=s.probe, detail=f"/health: {s.probe}"
                    )
                )
                continue
            quorum = s.leader is not None
            comps.append(
                ComponentSignals(
                    m,
                    reachable=True,
                    ready=quorum,
                    latency_p99_ms=4.0,
                    started_at=T0 - 100,
                    probe_ms=2.0,
                    role=s.role,
                    term=s.term,
                    leader=s.leader,
                    quorum=quorum if self.report_quorum else None,
                )
            )
        links = []
        for a in self.members:
            if states[a].probe is not None or not self.mesh_links:
                continue  # a silent member's metrics are not read
            for b in self.members:
                if a != b:
                    links.append(
                        LinkSignals(a, b, up=not self.link_down(a, b, e), latency_p99_ms=1.0)
                    )
        for m, s in states.items():
            ok = self.can_write(m, s, states, e)
            links.append(LinkSignals("client", m, error_rate=0.0 if ok else 1.0))
        return Observation(at=T0 + t, components=tuple(comps), links=tuple(links))

    def case(self) -> Case:
        """Observe every TICK until ``settle`` s after the first confirmed violation (of
        ``until``, if given) or ``timeout``; violations as the monitor confirms them."""
        observations: list[Observation] = []
        started: dict[tuple[str, str], float] = {}
        confirmed: dict[tuple[str, str, float], Violation] = {}
        stop_at: float | None = None
        t = 0.0
        while t <= self.timeout and (stop_at is None or t <= stop_at):
            obs = self.observe(t)
            observations.append(obs)
            for key, bad in self._findings(obs).items():
                if not bad:
                    first = started.pop(key, None)
                    v = confirmed.get((*key, first)) if first is not None else None
                    if v is not None:
                        confirmed[(*key, v.first_seen)] = dataclasses.replace(v, cleared_at=obs.at)
                    continue
                first = started.setdefault(key, obs.at)
                if obs.at - first >= GRACE - 1e-9 and (*key, first) not in confirmed:
                    name, where = key
                    confirmed[(*key, first)] = Violation(
                        name, Category.AVAILABILITY, where, f"{name} at {where}", first, obs.at
                    )
                    if stop_at is None and self.until in (None, name):
                        stop_at = t + self.settle
            t = round(t + TICK, 6)
        return Case(topology(self.members), tuple(observations), tuple(confirmed.values()))

    def _findings(self, obs: Observation) -> dict[tuple[str, str], bool]:
        out: dict[tuple[str, str], bool] = {}
        for c in obs.components:
            out[("member_down", c.component)] = not c.reachable
            out[("no_quorum", c.component)] = c.reachable and c.leader is None
        for link in obs.links:
            if link.source == "client":
                out[("writes_fail", link.target)] = (link.error_rate or 0.0) > 0.5
            else:
                key = ("peer_link_down", link.source)
                out[key] = out.get(key, False) or link.up is False
        return out


def variant(raft: Raft, **changes: object) -> Raft:
    """``raft`` with some fields changed; a run is never made shorter than it was."""
    settle = changes.get("settle")
    if isinstance(settle, float | int):
        changes["settle"] = max(float(settle), raft.settle)
    return dataclasses.replace(raft, **changes)  # type: ignore[arg-type]
