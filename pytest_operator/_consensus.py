"""What the members of a mesh say about their group, read off a case's timeline.

A *mesh* is a set of components that call one another both ways (the peers of a
consensus group: links whose two ends are components, each reported by its source).
Its members may report consensus facts (role, term, the leader they see, quorum).
From these, over the monitor's timeline, :class:`MeshView` derives the features the
causal engine's consensus hypotheses weigh:

- who answered the monitor throughout, and who went silent (a crash or a pause);
- whether each member could commit, observation by observation, and whether it lost
  that to the end of the window (a member that lost quorum and stayed so);
- the leader a majority of the members agreed on, first and last (an election);
- terms: a member campaigning alone keeps raising its term past the others';
- the mesh links that were cut (down in two reports or more, or in the latest one),
  and the groups of members still connected by links up both ways.

Nothing here knows a subject: only the signal vocabulary and the topology. Raft's
facts as a real cluster shows them shaped these choices: after a leader stops, its
followers keep its id for about an election timeout before a new term and leader
appear; an isolated leader steps down after an election timeout and then sees no
leader while its term keeps rising; link reports can lag a cut by seconds, so the
members' own views of leader and quorum come first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pytest_operator._diagnosis import Case
from pytest_operator._signals import ComponentSignals, Role
from pytest_operator._topology import ComponentKind, Topology

SILENT_PROBES = 2
"""Probe failures from which a member counts as silent (one may be a loaded machine's blip)."""
LINK_REPORT_LAG_S = 6.0
"""How long a member's report that its link to a peer is up may lag a cut. A member sees
a silent peer at once only when the two talk all the time (a leader and its followers);
otherwise it notices when its peer stream times out (commonly 5 s). A link reported up
less than this after the group's trouble began proves nothing."""


def mesh_of(topology: Topology) -> tuple[str, ...]:
    """Components at the ends of links that run both ways between two non-client
    components, in topology order (a consensus group's peers)."""
    clients = {c.name for c in topology.components if c.kind is ComponentKind.CLIENT}
    pairs = {(lk.source, lk.target) for lk in topology.links}
    members = {
        end
        for a, b in pairs
        if a != b and (b, a) in pairs and a not in clients and b not in clients
        for end in (a, b)
    }
    return tuple(c.name for c in topology.components if c.name in members)


def has_quorum(c: ComponentSignals) -> bool | None:
    """Whether ``c`` could commit, as it says (None: it did not answer, or cannot say).

    A member that reports consensus facts has quorum when it says so and sees a leader;
    one that reports none of them falls back on its readiness. (:class:`MeshView` also
    takes quorum away from the followers of a leader no majority follows: a leader cut
    off keeps its role, by its own word, until it notices.)
    """
    if not c.reachable:
        return None
    consensus = c.role is not None or c.term is not None or c.quorum is not None
    if consensus:
        if c.quorum is False or c.leader is None:
            return False
        return c.ready is not False
    return c.ready


@dataclass(slots=True)
class Member:
    name: str
    answered: int = 0
    silent: list[float] = field(default_factory=list)
    quorum: list[tuple[float, bool]] = field(default_factory=list)
    terms: list[tuple[float, int]] = field(default_factory=list)
    led: list[float] = field(default_factory=list)
    """Times it said it was the leader."""
    views: list[tuple[float, str | None, int | None]] = field(default_factory=list)
    """(at, the leader it saw, its term) when it said."""

    @property
    def is_silent(self) -> bool:
        return len(self.silent) >= SILENT_PROBES

    @property
    def final_quorum(self) -> bool | None:
        return self.quorum[-1][1] if self.quorum else None

    @property
    def lost_at(self) -> float | None:
        """Start of the run of no-quorum observations that lasts to the end (None if it
        had quorum at the end, or never said)."""
        at = None
        for t, ok in reversed(self.quorum):
            if ok:
                break
            at = t
        return at

    @property
    def ever_lost_at(self) -> float | None:
        return next((t for t, ok in self.quorum if not ok), None)

    @property
    def first_term(self) -> int | None:
        return self.terms[0][1] if self.terms else None

    @property
    def last_term(self) -> int | None:
        return self.terms[-1][1] if self.terms else None


class MeshView:
    """The consensus features of a case (empty when the topology has no mesh)."""

    def __init__(self, case: Case) -> None:
        self.mesh = mesh_of(case.topology)
        self.majority = len(self.mesh) // 2 + 1
        self.members: dict[str, Member] = {n: Member(n) for n in self.mesh}
        self.leaders: list[tuple[float, str | None]] = []
        """Per observation, the leader a majority of all members saw (None: no majority)."""
        down: dict[tuple[str, str], list[bool]] = {}
        first_down: dict[tuple[str, str], float] = {}
        mesh = set(self.mesh)
        for obs in sorted(case.observations, key=lambda o: o.at):
            views: Counter[str] = Counter()
            answering: list[ComponentSignals] = []
            for c in obs.components:
                m = self.members.get(c.component)
                if m is None:
                    continue
                if not c.reachable:
                    m.silent.append(obs.at)
                    continue
                m.answered += 1
                answering.append(c)
                if c.term is not None:
                    m.terms.append((obs.at, c.term))
                if c.role is Role.LEADER:
                    m.led.append(obs.at)
                if c.leader is not None:
                    views[c.leader] += 1
            for c in answering:
                m = self.members[c.component]
                q = has_quorum(c)
                if q and c.leader is not None and views[c.leader] < self.majority:
                    q = False  # its leader is followed by no majority: nobody can commit
                if q is not None:
                    m.quorum.append((obs.at, q))
                if c.leader is not None or q is False:
                    m.views.append((obs.at, c.leader, c.term))
            top = views.most_common(1)
            self.leaders.append((obs.at, top[0][0] if top and top[0][1] >= self.majority else None))
            for link in obs.links:
                key = (link.source, link.target)
                if link.source not in mesh or link.target not in mesh:
                    continue
                src = obs.component(link.source)
                if src is not None and not src.reachable:
                    continue  # a silent member's report says nothing
                broken = link.up is False or (link.error_rate or 0.0) > 0.5
                down.setdefault(key, []).append(broken)
                if broken:
                    first_down.setdefault(key, obs.at)
        self.reported = set(down)
        """Mesh links some member reported on while it answered."""
        self.cut = {k for k, v in down.items() if v[-1] or sum(v) >= 2}
        """Mesh links down in their latest report, or in two reports or more."""
        self.cut_at = {k: first_down[k] for k in self.cut}
        self.end = max((o.at for o in case.observations), default=0.0)
        symptoms = [
            *self.cut_at.values(),
            *(m.silent[0] for m in self.members.values() if m.silent),
            *(t for m in self.members.values() if (t := m.ever_lost_at) is not None),
        ]
        self.trouble_at = min(symptoms) if symptoms else None
        """The first sign of trouble in the group (a cut, a silence, a loss of quorum)."""

    # --- members ---------------------------------------------------------------

    def answering(self) -> list[str]:
        """Members that answered the monitor (not silent), in mesh order."""
        return [n for n in self.mesh if not self.members[n].is_silent and self.members[n].answered]

    def silent(self) -> list[str]:
        return [n for n in self.mesh if self.members[n].is_silent]

    def lost(self) -> list[str]:
        """Answering members that lost quorum and had not regained it at the end."""
        return [n for n in self.answering() if self.members[n].lost_at is not None]

    def kept(self) -> list[str]:
        """Answering members that could commit at the end."""
        return [n for n in self.answering() if self.members[n].final_quorum is True]

    def says_quorum(self) -> bool:
        """Some member reported whether it could commit."""
        return any(m.quorum for m in self.members.values())

    # --- leaders and terms -----------------------------------------------------

    def out_of_step(self, name: str) -> tuple[str, int | None, str, int | None] | None:
        """(the leader it saw last, its term, the majority's last leader, their term) when
        ``name`` last saw a leader other than the one the majority followed at the end."""
        m, last = self.members[name], self.last_leader()
        if last is None or not m.views:
            return None
        _, seen, term = m.views[-1]
        if seen is None or seen == last[0]:
            return None
        theirs = []
        for n in self.answering():
            views = self.members[n].views
            if n != name and views and views[-1][1] == last[0] and views[-1][2] is not None:
                theirs.append(views[-1][2])
        return seen, term, last[0], max(theirs, default=None)

    def followers_of(self, name: str) -> set[str]:
        """Members that, at some point, said ``name`` led them."""
        return {
            n for n, m in self.members.items() if n != name and any(v[1] == name for v in m.views)
        }

    def stuck(self, name: str) -> set[float]:
        """Times ``name`` answered but could not commit: it had no quorum, or the leader it
        followed was silent then, or was a leader the others replaced by an election and
        that ended silent or cut off."""
        m = self.members[name]
        out = {at for at, ok in m.quorum if not ok}
        elected = self.elected()
        gone = None
        if elected is not None:
            old = self.members.get(elected[0])
            if old is not None and (old.is_silent or old.lost_at is not None):
                gone = elected
        for at, leader, _ in m.views:
            lm = self.members.get(leader) if leader is not None else None
            if lm is not None and at in lm.silent:
                out.add(at)
            elif gone is not None and leader == gone[0] and at < gone[2]:
                out.add(at)
        return out

    def first_leader(self) -> tuple[str, float] | None:
        return next(((n, at) for at, n in self.leaders if n is not None), None)

    def last_leader(self) -> tuple[str, float] | None:
        return next(((n, at) for at, n in reversed(self.leaders) if n is not None), None)

    def elected(self) -> tuple[str, str, float] | None:
        """(old, new, when) if the majority's leader changed during the window."""
        first, last = self.first_leader(), self.last_leader()
        if first is None or last is None or first[0] == last[0]:
            return None
        at = next(at for at, n in self.leaders if n == last[0] and at >= first[1])
        return first[0], last[0], at

    def led(self, name: str) -> float | None:
        """When ``name`` was seen leading: by its own word or by a majority."""
        m = self.members.get(name)
        own = m.led[0] if m is not None and m.led else None
        majority = next((at for at, n in self.leaders if n == name), None)
        times = [t for t in (own, majority) if t is not None]
        return min(times) if times else None

    def term_rise(self, names: Iterable[str]) -> tuple[int, int] | None:
        """The lowest first and highest last term among ``names``, if that is a rise."""
        firsts = [t for n in names if (t := self.members[n].first_term) is not None]
        lasts = [t for n in names if (t := self.members[n].last_term) is not None]
        if not firsts or not lasts or max(lasts) <= min(firsts):
            return None
        return min(firsts), max(lasts)

    # --- links and groups ------------------------------------------------------

    def links_of(self, name: str) -> list[tuple[str, str]]:
        """Reported mesh links to and from ``name``."""
        return sorted(k for k in self.reported if name in k)

    def settled(self) -> bool:
        """The window ran long enough after the first trouble for every cut link to have
        been reported down: a link still reported up is up."""
        return self.trouble_at is not None and self.end - self.trouble_at >= LINK_REPORT_LAG_S

    def pairs_cut(self) -> set[frozenset[str]]:
        return {frozenset(k) for k in self.cut}

    def groups(self) -> list[list[str]]:
        """The answering members grouped by links up both ways (connected components;
        a pair with a link cut either way is not joined by it), in mesh order."""
        nodes = self.answering()
        cut = self.pairs_cut()
        seen: set[str] = set()
        out = []
        for start in nodes:
            if start in seen:
                continue
            group, todo = [], [start]
            seen.add(start)
            while todo:
                n = todo.pop()
                group.append(n)
                for other in nodes:
                    if other not in seen and frozenset((n, other)) not in cut:
                        seen.add(other)
                        todo.append(other)
            out.append(sorted(group, key=self.mesh.index))
        return out

    def across(self, groups: Sequence[Sequence[str]]) -> tuple[list[tuple[str, str]], ...]:
        """Reported links (across groups, within groups)."""
        where = {n: i for i, g in enumerate(groups) for n in g}
        known = sorted(k for k in self.reported if k[0] in where and k[1] in where)
        across = [k for k in known if where[k[0]] != where[k[1]]]
        within = [k for k in known if where[k[0]] == where[k[1]]]
        return across, within
