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
- misconfiguration(s): safety breaks with no infrastructure signal and no spike.

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
from dataclasses import dataclass, field

from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._diagnosis import Case, Diagnosis, Evidence, Hypothesis, recommend
from pytest_operator._invariants import Category
from pytest_operator._signals import ProbeFailure
from pytest_operator._topology import ComponentKind

CLIENT = "client"
CLOCK_SKEW_MS = 1000.0
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
        for obs in case.observations:
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
        scorers: list[_Scorer] = []
        for comp in case.topology.components:
            if comp.kind is ComponentKind.CLIENT:
                continue
            scorers += self._component(comp.name, comp.kind, f, case)
        clients = {c.name for c in case.topology.components if c.kind is ComponentKind.CLIENT}
        for link in case.topology.links:
            if link.source not in f.components and link.source not in clients:
                continue
            if (link.source, link.target) not in f.links:
                continue  # nobody reported on this link
            scorers += self._link(
                link.source, link.target, f, caller_is_client=link.source in clients
            )
        scorers += self._traffic(f, case)
        ranked = sorted(
            (s for s in scorers if s.score >= MIN_SCORE), key=lambda s: (-s.score, str(s.cause))
        )
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

    def _component(self, name: str, kind: ComponentKind, f: _Features, case: Case) -> list[_Scorer]:
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
            # a silent component explains what failed at it, or at whatever depends on it
            for s in (crash, pause):
                _explains(
                    s,
                    f,
                    {name} | f.dependents[name],
                    AVAILABILITY,
                    f"no availability violation at {name} or at what depends on it",
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

    def _link(self, a: str, b: str, f: _Features, *, caller_is_client: bool) -> list[_Scorer]:
        """Hypotheses on the link a -> b. When ``a`` is the clients (a pseudo-component
        whose failures the subject reports against the component they called), the
        violations to explain are ``b``'s."""
        lf = f.links[(a, b)]
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
                part.add(1, f"every other link into {b} stayed up")
            if ca is not None and ca.divergences:
                part.add(1, f"{a}'s view of shared state drifted from {b}'s", ca.divergence_at)
            behind = [k for k in f.links if k[0] == b and f.links[k].down]
            if behind:
                part.add(
                    -3,
                    f"{b}'s own calls to {behind[0][1]} failed: the failure lies behind {b}",
                    _first(f.links[behind[0]].down),
                )
            siblings = [k for k in f.links if k[0] == a and k[1] != b]
            if siblings and all(f.links[k].down for k in siblings):
                part.add(-2, f"{a}'s calls to every other component failed too: not one link")
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

    def _traffic(self, f: _Features, case: Case) -> list[_Scorer]:
        services = [c.name for c in case.topology.components if c.kind is ComponentKind.SERVICE]
        spiking = [n for n in services if n in f.components and f.components[n].rate_spike()]
        overload = _Scorer(RootCause(FaultKind.OVERLOAD, CLIENT))
        misconf = _Scorer(RootCause(FaultKind.MISCONFIGURATION, CLIENT))
        infra = f.infrastructure_signal()
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
        if infra:
            overload.add(-2, "infrastructure signals point elsewhere")
            misconf.add(-2, "infrastructure signals point elsewhere")
        if f.safety_components:
            for s in (overload, misconf):
                _explains(s, f, set(f.violated), {Category.SAFETY}, "no safety violation")
        return [overload, misconf]
