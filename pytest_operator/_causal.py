"""The causal engine: offline, deterministic root-cause ranking over generic signals.

Every fault kind has a signature over the signal vocabulary (``_signals``):

- crash(c): c stops answering the monitor's probe with a refused connection (nothing
  listens), and may come back with a fresh start time;
- pause(c): c stops answering with timeouts, and comes back with the same start time;
- partition(a, b): a's link to b fails while a and b both answer the monitor and b's
  other links are fine; a's view of shared state may drift. Not when b's own calls
  onward fail too (the failure lies behind b) or when every link of a fails (it is at a);
- latency / bandwidth(a, b): a's calls to b get slow while the link stays up, and b's
  own latency does not account for it;

``a`` may be the clients (a pseudo-component): their links are judged from the client
history, and the violations such a fault must explain are those of the component called.
- clock_skew(c): c's clock is far from the monitor's, and safety breaks at c;
- data_loss(s): a store lost the monitor's canary, restarted, and safety breaks on
  several components at once;
- overload(client): request rates spike across the services with no infrastructure
  signal;
- misconfiguration(client): safety breaks with no infrastructure signal and no spike;
  or the services report a configuration change after the clients' traffic began and
  before safety broke (a configuration set before the workload began, such as a reset
  between tests, is no evidence): then a spike is the traffic the new configuration
  failed to hold, not an overload.

Members of a mesh (components that call one another both ways: a consensus group's
peers, see ``_consensus``) add what they say of their group: role, term, the leader
they see, quorum. Over them:

- crash(c) / pause(c) of a member: as above, and if c led, the others elected another
  leader at a higher term; the members that followed it may lose quorum meanwhile;
- isolation(c): c answers the monitor but lost quorum (it sees no leader, or still
  claims a leadership nobody follows) while the others kept or elected a leader; its
  term rises past theirs; every mesh link to and from c fails, the others' stay up;
  clients see safety broken most often at c (stale reads: it serves state it can no
  longer update);
- split(groups): the members of groups without a majority lost quorum while a
  majority group kept it (or nobody has quorum, when no group holds a majority); the
  links across the groups fail, those within them stay up. The candidate groups are
  drawn from the links still up, from who kept quorum against who lost it, or, with no
  link report yet and nobody able to commit, every member alone;
- partition(a, b) between two members: exactly that pair's links cut, both ways, all
  else up; other pairs cut at the same time point to an isolation or a split.

Link reports between members can lag a cut by seconds; the members' views of leader
and quorum arrive first, so neither isolation nor split needs the links.

Each hypothesis over the topology scores the evidence for it minus the evidence
against it; hypotheses are ranked by score (ties broken by name, so the ranking is
deterministic) and confidences are a softmax over the positive scores. The engine
reads signal kinds and the topology, never names of subjects or keys, and never
the injected fault.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_operator._causes import FaultKind, RootCause, split_cause
from pytest_operator._consensus import MeshView
from pytest_operator._diagnosis import Case, Diagnosis, Evidence, Hypothesis, recommend
from pytest_operator._invariants import Category
from pytest_operator._signals import ProbeFailure
from pytest_operator._topology import ComponentKind

CLIENT = "client"
CLOCK_SKEW_MS = 1000.0
CONFIG_CHANGE_HORIZON_S = 60.0
"""A configuration change counts against safety broken at most this long after it."""
LINK_LATENCY_FLOOR_MS = 20.0
MIN_SCORE = 2.0
"""A hypothesis scoring below this is not reported."""


@dataclass(slots=True)
class _Component:
    refused: list[float] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)
    seen_up: int = 0
    starts: list[tuple[float, float]] = field(default_factory=list)  # (at, started_at)
    max_offset_ms: float = 0.0
    max_offset_at: float | None = None
    data_lost_at: float | None = None
    rates: list[float] = field(default_factory=list)
    rate_peak_at: float | None = None
    latencies: list[float] = field(default_factory=list)
    divergences: int = 0
    divergence_at: float | None = None
    safety: int = 0
    safety_at: float | None = None
    config_changes: set[float] = field(default_factory=set)

    @property
    def unreachable(self) -> bool:
        return bool(self.refused or self.timeouts)

    @property
    def restarted_at(self) -> float | None:
        for (_, a), (at, b) in zip(self.starts, self.starts[1:], strict=False):
            if abs(b - a) > 0.5:
                return at
        return None

    def rate_spike(self) -> bool:
        """The request rate was transient: its peak stands far above the lowest rate seen
        before or after it (a monitor may start mid-burst, so either side will do)."""
        if len(self.rates) < 2:
            return False
        peak_at = max(range(len(self.rates)), key=lambda i: self.rates[i])
        baseline = min(self.rates[:peak_at] + self.rates[peak_at + 1 :])
        return self.rates[peak_at] > 3 * baseline + 20


@dataclass(slots=True)
class _Link:
    down: list[float] = field(default_factory=list)
    healthy: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (at, p99 ms)


class _Features:
    def __init__(self, case: Case) -> None:
        self.components: dict[str, _Component] = defaultdict(_Component)
        self.links: dict[tuple[str, str], _Link] = defaultdict(_Link)
        self.clients_since: float | None = None
        for obs in case.observations:
            if obs.clients_since is not None:
                self.clients_since = min(self.clients_since or obs.clients_since, obs.clients_since)
            for c in obs.components:
                f = self.components[c.component]
                if not c.reachable:
                    if c.probe_failure is ProbeFailure.TIMEOUT:
                        f.timeouts.append(obs.at)
                    else:
                        f.refused.append(obs.at)
                else:
                    f.seen_up += 1
                if c.started_at is not None:
                    f.starts.append((obs.at, c.started_at))
                if c.config_changed_at is not None:
                    f.config_changes.add(c.config_changed_at)
                if c.clock_offset_ms is not None and abs(c.clock_offset_ms) > abs(f.max_offset_ms):
                    f.max_offset_ms, f.max_offset_at = c.clock_offset_ms, obs.at
                if c.data_intact is False and f.data_lost_at is None:
                    f.data_lost_at = obs.at
                if c.request_rate is not None:
                    f.rates.append(c.request_rate)
                    if c.request_rate >= max(f.rates):
                        f.rate_peak_at = obs.at
                if c.latency_p99_ms is not None:
                    f.latencies.append(c.latency_p99_ms)
            for link in obs.links:
                lf = self.links[(link.source, link.target)]
                src = obs.component(link.source)
                if src is not None and not src.reachable:
                    continue  # a link seen from a silent component says nothing
                broken = link.up is False or (link.error_rate or 0.0) > 0.5
                if broken:
                    lf.down.append(obs.at)
                else:
                    lf.healthy += 1
                if link.latency_p99_ms is not None and not broken:
                    lf.latencies.append((obs.at, link.latency_p99_ms))
            for d in obs.divergences:
                f = self.components[d.component]
                f.divergences += 1
                f.divergence_at = f.divergence_at or obs.at
            for s in obs.safety:
                for name in s.components:
                    f = self.components[name]
                    f.safety += 1
                    f.safety_at = f.safety_at or obs.at
        self.safety_components = {n for n, f in self.components.items() if f.safety}
        self.violated: dict[str, set[Category]] = defaultdict(set)
        self.violation_at: dict[tuple[str, Category], float] = {}
        for v in case.violations:
            self.violated[v.component].add(v.category)
            key = (v.component, v.category)
            self.violation_at[key] = min(self.violation_at.get(key, v.confirmed_at), v.confirmed_at)
        self.dependents: dict[str, set[str]] = defaultdict(set)
        for edge in case.topology.links:
            self.dependents[edge.target].add(edge.source)

    def explained(
        self, components: set[str], categories: set[Category]
    ) -> tuple[str, float] | None:
        """A confirmed violation at one of ``components`` in one of ``categories``."""
        found = [
            (self.violation_at[(c, cat)], f"{cat} violation at {c}")
            for c in sorted(components)
            for cat in sorted(self.violated.get(c, set()) & categories)
        ]
        if not found:
            return None
        at, text = min(found)
        return text, at

    def link_p99(self, key: tuple[str, str]) -> tuple[float, float | None]:
        lat = self.links[key].latencies if key in self.links else []
        if not lat:
            return 0.0, None
        p = max(lat, key=lambda x: x[1])
        return p[1], p[0]

    def caller_cut_off(self, source: str) -> bool:
        """Every one of several links out of ``source`` failed: whatever happened is at the
        caller's end (clients that overwhelm every node, say), not on a link."""
        out = [lf for (a, _), lf in self.links.items() if a == source]
        return len(out) > 1 and all(lf.down for lf in out)

    def config_changed(self, names: Sequence[str]) -> list[tuple[str, float]]:
        """The components among ``names`` whose configuration changed after the clients'
        traffic began and before safety first broke (not long before): each with the
        latest such change."""
        broke = [f.safety_at for f in self.components.values() if f.safety_at is not None]
        if self.clients_since is None or not broke:
            return []
        first_broke = min(broke)
        out = []
        for name in names:
            f = self.components.get(name)
            changes = [
                at
                for at in (f.config_changes if f is not None else ())
                if self.clients_since < at <= first_broke
                and first_broke - at <= CONFIG_CHANGE_HORIZON_S
            ]
            if changes:
                out.append((name, max(changes)))
        return out

    def infrastructure_signal(self) -> bool:
        return (
            any(
                f.unreachable or abs(f.max_offset_ms) > CLOCK_SKEW_MS
                for f in self.components.values()
            )
            or any(lf.down for key, lf in self.links.items() if not self.caller_cut_off(key[0]))
            or any(f.data_lost_at is not None for f in self.components.values())
        )


class _Scorer:
    def __init__(self, cause: RootCause) -> None:
        self.cause = cause
        self.score = 0.0
        self.pro: list[Evidence] = []
        self.con: list[Evidence] = []

    def add(self, weight: float, text: str, at: float | None = None) -> None:
        self.score += weight
        (self.pro if weight > 0 else self.con).append(Evidence(text, at))


AVAILABILITY = {Category.AVAILABILITY}
CONSENSUS = {Category.AVAILABILITY, Category.LATENCY, Category.CONSISTENCY}
"""What a group that cannot commit, or commits late, breaks."""
ANY = set(Category)


def _explains(
    s: _Scorer, f: _Features, components: set[str], categories: set[Category], what: str
) -> None:
    """A hypothesis must explain a confirmed violation; one that explains none is doubted."""
    found = f.explained(components, categories)
    if found is not None:
        s.add(2, f"explains the {found[0]}", found[1])
    else:
        s.add(-2, f"explains no confirmed violation ({what})")


def _first(times: list[float]) -> float | None:
    return times[0] if times else None


class CausalEngine:
    name = "causal"

    async def diagnose(self, case: Case) -> Diagnosis:
        return self.diagnose_now(case)

    def diagnose_now(self, case: Case) -> Diagnosis:
        began = time.perf_counter()
        hypotheses = self._rank(case) if case.violations else []
        return Diagnosis(
            engine=self.name,
            hypotheses=tuple(hypotheses),
            recommendations=recommend(hypotheses, case.actions),
            latency_s=time.perf_counter() - began,
        )

    def _rank(self, case: Case) -> list[Hypothesis]:
        f = _Features(case)
        mv = MeshView(case)
        scorers: list[_Scorer] = []
        for comp in case.topology.components:
            if comp.kind is ComponentKind.CLIENT:
                continue
            scorers += self._component(comp.name, comp.kind, f, mv)
        clients = {c.name for c in case.topology.components if c.kind is ComponentKind.CLIENT}
        for link in case.topology.links:
            if link.source not in f.components and link.source not in clients:
                continue
            if (link.source, link.target) not in f.links:
                continue  # nobody reported on this link
            scorers += self._link(
                link.source, link.target, f, mv, caller_is_client=link.source in clients
            )
        scorers += _group_hypotheses(f, mv)
        scorers += self._traffic(f, case, mv)
        ranked: list[_Scorer] = []
        for s in sorted(
            (s for s in scorers if s.score >= MIN_SCORE), key=lambda s: (-s.score, str(s.cause))
        ):
            if not any(r.cause.matches(s.cause) for r in ranked):
                ranked.append(s)  # a mesh link's two directions are one partition
        total = sum(math.exp(s.score) for s in ranked)
        return [
            Hypothesis(
                cause=s.cause,
                confidence=math.exp(s.score) / total,
                score=round(s.score, 3),
                evidence_for=tuple(s.pro),
                evidence_against=tuple(s.con),
            )
            for s in ranked
        ]

    def _component(
        self, name: str, kind: ComponentKind, f: _Features, mv: MeshView
    ) -> list[_Scorer]:
        c = f.components.get(name)
        if c is None:
            return []
        out = []
        inbound = [k for k in f.links if k[1] == name]
        inbound_down = [k for k in inbound if f.links[k].down]

        crash = _Scorer(RootCause(FaultKind.CRASH, name))
        pause = _Scorer(RootCause(FaultKind.PAUSE, name))
        if c.refused:
            crash.add(
                3, f"{name} refused the monitor's probe {len(c.refused)} time(s)", c.refused[0]
            )
            pause.add(-2, f"{name} refused connections: nothing listened", c.refused[0])
        if c.timeouts:
            pause.add(
                3,
                f"{name} left the monitor's probe unanswered {len(c.timeouts)} time(s)",
                c.timeouts[0],
            )
            crash.add(
                -2,
                f"{name} accepted but did not answer: a process still held the port",
                c.timeouts[0],
            )
        if not c.unreachable:
            msg = f"{name} answered every probe"
            crash.add(-3, msg)
            pause.add(-3, msg)
        restarted = c.restarted_at
        if restarted is not None:
            crash.add(1, f"{name} came back with a new start time", restarted)
            pause.add(-1, f"{name} restarted; a frozen process keeps its start time", restarted)
        if c.unreachable:
            # a silent component explains what failed at it, or at whatever depends on it;
            # in a mesh, where every peer calls every other, the peers that followed it
            # (it led them) depend on it, and what its group could not do in time counts
            depends = f.dependents[name]
            categories = AVAILABILITY
            if name in mv.members:
                _silent_member(name, c, mv, crash, pause)
                depends = (depends - set(mv.mesh)) | mv.followers_of(name)
                categories = CONSENSUS
            for s in (crash, pause):
                _explains(
                    s,
                    f,
                    {name} | depends,
                    categories,
                    f"no {'/'.join(sorted(categories))} violation at {name}"
                    " or at what depends on it",
                )
        if inbound and len(inbound_down) == len(inbound) and c.unreachable:
            for s in (crash, pause):
                s.add(
                    1,
                    f"every link into {name} failed at once",
                    _first(f.links[inbound_down[0]].down),
                )
        out += [crash, pause]

        skew = _Scorer(RootCause(FaultKind.CLOCK_SKEW, name))
        if abs(c.max_offset_ms) > CLOCK_SKEW_MS:
            skew.add(
                4,
                f"{name}'s clock is {c.max_offset_ms / 1000:+.1f} s off the monitor's",
                c.max_offset_at,
            )
            if c.safety:
                skew.add(1, f"safety broke at {name}", c.safety_at)
            _explains(skew, f, {name}, ANY, f"nothing violated at {name}")
        out.append(skew)

        if kind is ComponentKind.DATASTORE:
            loss = _Scorer(RootCause(FaultKind.DATA_LOSS, name))
            if c.data_lost_at is not None:
                loss.add(3, f"the monitor's canary in {name} vanished", c.data_lost_at)
                crash.add(-1, f"{name}'s state vanished: more than a crash", c.data_lost_at)
            if restarted is not None:
                loss.add(1, f"{name} restarted", restarted)
            if len(f.safety_components) >= 2 and c.data_lost_at is not None:
                loss.add(1, f"safety broke on {len(f.safety_components)} components at once")
            if c.data_lost_at is not None:
                _explains(
                    loss,
                    f,
                    set(f.violated),
                    {Category.SAFETY, Category.CONSISTENCY},
                    "no safety or consistency violation",
                )
            out.append(loss)
        return out

    def _link(
        self, a: str, b: str, f: _Features, mv: MeshView, *, caller_is_client: bool
    ) -> list[_Scorer]:
        """Hypotheses on the link a -> b. When ``a`` is the clients (a pseudo-component
        whose failures the subject reports against the component they called), the
        violations to explain are ``b``'s. Between two members of a mesh the reverse
        link is part of the same partition, and a partition is one pair: when other
        pairs are cut at once, an isolation or a split explains it better."""
        lf = f.links[(a, b)]
        mesh_link = a in mv.members and b in mv.members
        ca, cb = f.components.get(a), f.components.get(b)
        blamed = {b} if caller_is_client else {a}
        part = _Scorer(RootCause(FaultKind.PARTITION, a, b))
        lat = _Scorer(RootCause(FaultKind.LATENCY, a, b))
        bw = _Scorer(RootCause(FaultKind.BANDWIDTH, a, b))
        if len(lf.down) == 1:
            part.add(
                1, f"{a}'s calls to {b} failed once (a blip, or the start of a cut)", lf.down[0]
            )
        elif lf.down:
            part.add(3, f"{a}'s calls to {b} failed {len(lf.down)} times", lf.down[0])
        if lf.down:
            lat.add(-2, f"{a}'s link to {b} failed outright", lf.down[0])
            bw.add(-2, f"{a}'s link to {b} failed outright", lf.down[0])
            if cb is not None and not cb.unreachable:
                part.add(1, f"{b} answered the monitor all along")
            others = [k for k in f.links if k[1] == b and k[0] != a]
            if others and all(not f.links[k].down for k in others):
                if not mesh_link or mv.settled():  # a peer's report of a cut can lag it
                    part.add(1, f"every other link into {b} stayed up")
            if ca is not None and ca.divergences:
                part.add(1, f"{a}'s view of shared state drifted from {b}'s", ca.divergence_at)
            behind = [k for k in f.links if k[0] == b and k[1] != a and f.links[k].down]
            if behind:
                part.add(
                    -3,
                    f"{b}'s own calls to {behind[0][1]} failed: the failure lies behind {b}",
                    _first(f.links[behind[0]].down),
                )
            siblings = [k for k in f.links if k[0] == a and k[1] != b]
            if siblings and all(f.links[k].down for k in siblings):
                part.add(-2, f"{a}'s calls to every other component failed too: not one link")
            if mesh_link:
                _mesh_pair(part, a, b, mv)
            elif b in mv.members:
                _behind_member(part, lf, b, mv)
        if cb is not None and cb.unreachable:
            part.add(-3, f"{b} itself stopped answering", _first(cb.refused or cb.timeouts))
        if ca is not None and ca.unreachable and not lf.down:
            part.add(-1, f"{a} itself stopped answering")
        if lf.down:
            _explains(
                part,
                f,
                blamed,
                {Category.AVAILABILITY, Category.CONSISTENCY},
                f"no availability or consistency violation at {', '.join(sorted(blamed))}",
            )

        p99, at = f.link_p99((a, b))
        others_p99 = [f.link_p99(k)[0] for k in f.links if k[1] == b and k[0] != a]
        if not others_p99:  # nothing else calls b: compare with a's calls to the others
            others_p99 = [f.link_p99(k)[0] for k in f.links if k[0] == a and k[1] != b]
        baseline = statistics.median(others_p99) if others_p99 else 0.0
        if p99 > LINK_LATENCY_FLOOR_MS and p99 > 3 * baseline:
            lat.add(
                3, f"{a}'s calls to {b} reached p99 {p99:.0f} ms (others {baseline:.0f} ms)", at
            )
            bw.add(2, f"{a}'s calls to {b} slowed to p99 {p99:.0f} ms", at)
            if ca is not None and ca.latencies and max(ca.latencies) > LINK_LATENCY_FLOOR_MS:
                lat.add(1, f"{a}'s own latency rose to {max(ca.latencies):.0f} ms")
            if cb is not None and cb.latencies and max(cb.latencies) >= p99 / 2:
                for s in (lat, bw):
                    s.add(
                        -3,
                        f"{b}'s own latency ({max(cb.latencies):.0f} ms) accounts for it:"
                        f" the delay is at or behind {b}, not on the link",
                    )
            for s in (lat, bw):
                _explains(
                    s,
                    f,
                    blamed,
                    {Category.LATENCY},
                    f"no latency violation at {b if caller_is_client else a}",
                )
        return [part, lat, bw]

    def _traffic(self, f: _Features, case: Case, mv: MeshView) -> list[_Scorer]:
        services = [c.name for c in case.topology.components if c.kind is ComponentKind.SERVICE]
        spiking = [n for n in services if n in f.components and f.components[n].rate_spike()]
        overload = _Scorer(RootCause(FaultKind.OVERLOAD, CLIENT))
        misconf = _Scorer(RootCause(FaultKind.MISCONFIGURATION, CLIENT))
        infra = f.infrastructure_signal() or any(
            m.ever_lost_at is not None for m in mv.members.values()
        )
        if services and len(spiking) * 2 >= len(services):
            at = f.components[spiking[0]].rate_peak_at
            overload.add(
                2, f"request rate spiked on {len(spiking)} of {len(services)} services", at
            )
        if f.safety_components and not infra:
            overload.add(1, "safety broke with no infrastructure signal")
            misconf.add(2, "safety broke with no infrastructure signal")
            if not spiking:
                misconf.add(1, "and with no traffic spike")
            else:
                misconf.add(-1, "but traffic spiked")
        changed = f.config_changed(services) if f.safety_components else []
        if services and len(changed) * 2 >= len(services):
            at = min(t for _, t in changed)
            misconf.add(
                3,
                f"configuration changed on {len(changed)} of {len(services)} services after"
                " the clients' traffic began, before safety broke",
                at,
            )
            overload.add(-2, "the traffic met a configuration changed under it", at)
        if infra:
            overload.add(-2, "infrastructure signals point elsewhere")
            misconf.add(-2, "infrastructure signals point elsewhere")
        if f.safety_components:
            for s in (overload, misconf):
                _explains(s, f, set(f.violated), {Category.SAFETY}, "no safety violation")
        return [overload, misconf]


# --- consensus groups (see _consensus) ---------------------------------------------


def _names(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _silent_member(name: str, c: _Component, mv: MeshView, *scorers: _Scorer) -> None:
    """A silent member of a mesh: if it led, the others elected another; the members
    that depended on it may have lost quorum meanwhile."""
    elected = mv.elected()
    if elected is not None and elected[0] == name:
        others = [n for n in mv.mesh if n != name]
        rise = mv.term_rise(others)
        terms = f" (term {rise[0]} -> {rise[1]})" if rise else ""
        for s in scorers:
            s.add(1, f"{name} led; the others elected {elected[1]}{terms}", elected[2])
    failures = len(c.refused) + len(c.timeouts)
    if failures == 1:
        for s in scorers:
            s.add(-2, f"{name} missed a single probe and answered the others: a blip")
    went_silent = _first(c.refused or c.timeouts)
    lost = [
        n
        for n in mv.answering()
        if n != name
        and (at := mv.members[n].ever_lost_at) is not None
        and (went_silent is None or at >= went_silent)
    ]
    if lost:
        at = min(t for n in lost if (t := mv.members[n].ever_lost_at) is not None)
        for s in scorers:
            s.add(1, f"{_names(lost)} lost quorum while {name} was silent", at)


def _mesh_pair(part: _Scorer, a: str, b: str, mv: MeshView) -> None:
    """A partition between two mesh members is that pair's links cut, all else up."""
    if (b, a) in mv.cut:
        part.add(1, f"{b}'s link back to {a} failed too", mv.cut_at[(b, a)])
    others = mv.pairs_cut() - {frozenset((a, b))}
    if others:
        pairs = sorted("<->".join(sorted(p, key=mv.mesh.index)) for p in others)
        part.add(
            -2,
            f"{len(others)} other mesh pair(s) were cut too ({_names(pairs, 3)}): more than"
            " one link",
        )
    elif (a, b) in mv.cut and len(mv.reported) > 2 and mv.settled():
        part.add(2, f"every other mesh link stayed up: only {a} and {b} were cut apart")


def _behind_member(part: _Scorer, lf: _Link, b: str, mv: MeshView) -> None:
    """Calls into a mesh member that failed while it could not commit fail behind it."""
    if b in mv.lost():
        part.add(
            -3,
            f"{b} lost quorum while it answered the monitor: its failures lie behind it,"
            " in its group",
            mv.members[b].lost_at,
        )
        return
    stuck = mv.stuck(b)
    during = [at for at in lf.down if at in stuck]
    if len(during) * 2 >= len(lf.down):
        part.add(
            -2,
            f"{b} could not commit when calls to it failed (no leader, or a leader that was"
            " gone): the failure lies behind it",
            during[0],
        )


def _group_hypotheses(f: _Features, mv: MeshView) -> list[_Scorer]:
    """Isolation of each member, and splits of the mesh into the groups the evidence draws."""
    if len(mv.mesh) < 3:
        return []
    out = [s for name in mv.mesh if (s := _isolation(name, f, mv)) is not None]
    out += [_split(cause, f, mv) for cause in _split_candidates(mv)]
    return out


def _isolation(c: str, f: _Features, mv: MeshView) -> _Scorer | None:
    m = mv.members[c]
    links = mv.links_of(c)
    cut = [k for k in links if k in mv.cut]
    all_cut = bool(links) and len(cut) == len(links)
    if m.is_silent or (m.lost_at is None and not all_cut):
        # nothing of an isolation: it kept quorum and its links; or it stopped answering
        # the monitor (a crash or pause, which its peers see as links down too)
        return None
    s = _Scorer(RootCause(FaultKind.ISOLATION, c))
    if m.silent:
        s.add(-1, f"{c} missed a probe", m.silent[0])
    if m.lost_at is not None:
        s.add(
            3,
            f"{c} lost quorum (no leader, or cannot commit) while it answered the monitor",
            m.lost_at,
        )
    others = [n for n in mv.mesh if n != c]
    answering = [n for n in others if n in mv.answering()]
    lost_too = [n for n in answering if mv.members[n].lost_at is not None]
    kept = [n for n in answering if mv.members[n].final_quorum is True]
    if lost_too and not kept:
        s.add(
            -4,
            f"none of the others could commit either ({_names(lost_too)}), though they"
            " would form a majority: more than one member was cut off",
        )
    elif lost_too:
        s.add(-2, f"{_names(lost_too)} lost quorum too: more than {c} was cut off")
    elif len(kept) >= mv.majority:
        last = mv.last_leader()
        under = f" under {last[0]}" if last is not None and last[0] != c else ""
        s.add(2, f"the others kept quorum{under}", last[1] if last else None)
        if m.lost_at is not None:
            _stale_at(s, c, f)
    silent = [n for n in others if mv.members[n].is_silent]
    if silent:
        s.add(
            -2, f"{_names(silent)} stopped answering the monitor", mv.members[silent[0]].silent[0]
        )
    elected = mv.elected()
    if elected is not None and elected[0] == c:
        s.add(1, f"{c} led; the others elected {elected[1]}", elected[2])
    step = mv.out_of_step(c)
    if step is not None:
        seen, term, theirs_leader, theirs_term = step
        who = "claims to lead" if seen == c else f"follows {seen}"
        at = f" at term {term}" if term is not None else ""
        them = f" at term {theirs_term}" if theirs_term is not None else ""
        s.add(1, f"{c} still {who}{at} while the others follow {theirs_leader}{them}")
    own = m.last_term
    theirs = [t for n in answering if (t := mv.members[n].last_term) is not None]
    if own is not None and theirs and own > max(theirs) and m.lost_at is not None:
        s.add(
            2,
            f"{c}'s term rose to {own}, past the others' {max(theirs)}: its campaigns"
            " reach none of them",
        )
    if all_cut:
        s.add(
            3,
            f"every mesh link to and from {c} failed ({len(cut)})",
            min(mv.cut_at[k] for k in cut),
        )
    elif cut:
        reached = sorted({p for k in links if k not in mv.cut for p in k if p != c})
        if mv.settled():
            s.add(
                -2,
                f"only {len(cut)} of {c}'s {len(links)} mesh links failed: it still"
                f" reached {_names(reached)}",
            )
        else:
            s.add(
                0,
                f"its links to {_names(reached)} were still reported up (such reports"
                " can lag a cut)",
            )
    among = sorted(k for k in mv.cut if c not in k)
    if among:
        s.add(
            -2,
            f"links among the others failed too ({among[0][0]}->{among[0][1]})",
            mv.cut_at[among[0]],
        )
    _explains(s, f, {c, *mv.mesh} | f.dependents[c], ANY, f"nothing violated at {c} or its group")
    return s


def _stale_at(s: _Scorer, c: str, f: _Features) -> None:
    """Called when ``c`` lost quorum while a majority of the others kept it. The client
    history's safety violations at ``c`` (reads that saw values the others had already
    overwritten) are what such a member does: cut off, it keeps serving the state it has
    and can no longer update. A history checker may also blame ops at the others that
    contradict what ``c`` served, so ``c`` need only be blamed more often than any other."""
    cf = f.components.get(c)
    if cf is None or not cf.safety:
        return
    total = sum(x.safety for x in f.components.values())
    rivals = {n: x.safety for n, x in f.components.items() if n != c and x.safety}
    if rivals and max(rivals.values()) >= cf.safety:
        top = max(sorted(rivals), key=lambda n: rivals[n])
        s.add(
            -1,
            f"clients saw safety broken at {top} as often as at {c} or more"
            f" ({rivals[top]} vs {cf.safety} of {total} reports)",
        )
        return
    where = f"most often at {c} ({cf.safety} of {total} reports)" if rivals else f"only at {c}"
    s.add(
        2,
        f"clients saw safety broken {where}: cut off from the quorum, it served state it"
        " could no longer update",
        cf.safety_at,
    )


def _split_candidates(mv: MeshView) -> list[RootCause]:
    """The splits the evidence draws: the groups the links still join; those that kept
    quorum against those that lost it; and, when nobody can commit, every member alone
    (the links may tell better groups once their reports catch up). Two groups with a
    single member are an isolation, weighed by :func:`_isolation`."""
    if mv.silent() or len(mv.answering()) < len(mv.mesh):
        return []  # a silent member is a crash or pause; a split leaves everyone answering
    candidates = []
    groups = mv.groups()
    if len(groups) >= 2:
        candidates.append(split_cause(groups, mv.mesh))
    lost, kept = mv.lost(), mv.kept()
    if lost and kept and len(lost) + len(kept) == len(mv.mesh):
        candidates.append(split_cause([kept, lost], mv.mesh))
    if len(lost) == len(mv.mesh):
        candidates.append(split_cause([[n] for n in mv.mesh], mv.mesh))
    out: list[RootCause] = []
    for cause in candidates:
        if cause.kind is FaultKind.SPLIT and not any(cause.matches(o) for o in out):
            out.append(cause)
    return out


def _split(cause: RootCause, f: _Features, mv: MeshView) -> _Scorer:
    s = _Scorer(cause)
    groups = cause.groups
    majority = [g for g in groups if len(g) >= mv.majority]
    minority = [n for g in groups if len(g) < mv.majority for n in g]
    lost, kept = set(mv.lost()), set(mv.kept())
    if mv.says_quorum():
        cut_off = [n for n in minority if n in lost]
        held = [n for n in minority if n in kept]
        if cut_off and not held:
            at = min(t for n in cut_off if (t := mv.members[n].lost_at) is not None)
            s.add(3, f"every member of the minority group(s) lost quorum ({_names(cut_off)})", at)
        if held:
            s.add(-2, f"{_names(held)} kept quorum, though in a group without a majority")
        if majority:
            group = majority[0]
            if all(n in kept for n in group):
                last = mv.last_leader()
                under = f" under {last[0]}" if last is not None and last[0] in group else ""
                s.add(2, f"the majority group ({_names(group)}) kept quorum{under}")
            else:
                s.add(-1, f"members of the majority group ({_names(group)}) lost quorum")
        elif not kept:
            s.add(2, "no group holds a majority, and no member could commit at the end")
    if mv.cut:
        across, within = mv.across(groups)
        up_across = [k for k in across if k not in mv.cut]
        if across and not up_across:
            s.add(
                3,
                f"every link across the groups failed ({len(across)})",
                min(mv.cut_at[k] for k in across),
            )
        elif up_across and mv.settled():
            a, b = up_across[0]
            s.add(-2, f"{len(up_across)} link(s) across the groups stayed up ({a}->{b})")
        cut_within = [k for k in within if k in mv.cut]
        if cut_within:
            a, b = cut_within[0]
            s.add(-2, f"links within a group failed ({a}->{b})", mv.cut_at[(a, b)])
        elif within and mv.settled():
            s.add(1, "the links within each group stayed up")
    depends = {d for n in mv.mesh for d in f.dependents[n]}
    _explains(s, f, set(mv.mesh) | depends, ANY, "nothing violated in the group")
    return s
