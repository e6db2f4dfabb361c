"""The small vocabulary every subject speaks to the engine.

A subject's ``observe()`` returns an :class:`Observation`: per-component signals
(does it answer the monitor's probe, does it say it is ready, its latency, error
rate, start time, last configuration change, clock offset), per-link signals (a's
calls to b, as seen from a), state divergence between a component's view and the
authoritative store, safety violations found in the client history, when the client
history began, and subject-specific facts. Members of a
consensus group also report what they believe of the group: their role, their term
(epoch), the leader they see and whether they can commit (quorum); their links to
one another are reported as each member sees its peers. The causal engine reads
only these shapes, so it can stay ignorant of what the subject is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ProbeFailure(enum.StrEnum):
    """How the monitor's probe of a component failed: the shape tells crash from freeze."""

    REFUSED = "refused"
    """Connection refused or reset at once: nothing listens (a crashed process)."""
    TIMEOUT = "timeout"
    """Connected, or tried to, and heard nothing in time (a frozen process, a black hole)."""
    ERROR = "error"
    """It answered, with an error status."""


class Role(enum.StrEnum):
    """A consensus member's role, as the member itself reports it."""

    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    """Campaigning for leadership: it sees no leader it accepts."""
    LEARNER = "learner"
    """Receives the log but does not vote."""


_RECENT = {"serde_omit_default": True}
"""Metadata of fields added after cases were recorded (``_serde.OMIT_DEFAULT``): left out
of a case's JSON while None, so older recorded cases write back byte for byte."""


@dataclass(frozen=True, slots=True)
class ComponentSignals:
    component: str
    reachable: bool
    """The monitor's own probe got an answer."""
    ready: bool | None = None
    """The component says its dependencies are fine (None: it cannot say)."""
    degraded: bool | None = None
    latency_p99_ms: float | None = None
    error_rate: float | None = None
    request_rate: float | None = None
    started_at: float | None = None
    """Epoch seconds by the component's own clock; a change means a restart."""
    clock_offset_ms: float | None = None
    """The component's wall clock minus the monitor's, corrected for the probe's round trip."""
    probe_ms: float | None = None
    probe_failure: ProbeFailure | None = None
    data_intact: bool | None = None
    """A canary the monitor wrote into this component's state is still there (stores only)."""
    detail: str | None = None
    role: Role | None = field(default=None, metadata=_RECENT)
    """Its consensus role as it reports it (None: not a consensus member, or it cannot say)."""
    term: int | None = field(default=None, metadata=_RECENT)
    """Its consensus term (epoch) as it reports it; a rise means an election."""
    leader: str | None = field(default=None, metadata=_RECENT)
    """The component it believes leads (None: it sees no leader, or is no consensus member)."""
    quorum: bool | None = field(default=None, metadata=_RECENT)
    """It can commit: it has a leader and a majority answers it (None: it cannot say)."""
    config_changed_at: float | None = field(default=None, metadata=_RECENT)
    """Epoch seconds of its last configuration change, as it reports it (None: none since
    it started, or it cannot say)."""


@dataclass(frozen=True, slots=True)
class LinkSignals:
    """``source``'s calls to ``target``, as ``source`` reports them.

    Between members of a mesh (consensus peers), ``up`` is False when ``source`` says
    its peer ``target`` is not active or unreachable, and ``latency_p99_ms`` is the
    peer round trip.
    """

    source: str
    target: str
    up: bool | None = None
    error_rate: float | None = None
    latency_p99_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Divergence:
    """A component's view of some state departs from the authoritative store's."""

    component: str
    store: str
    item: str
    view: float
    truth: float

    @property
    def delta(self) -> float:
        return self.view - self.truth


@dataclass(frozen=True, slots=True)
class SafetyViolation:
    """The client history shows a promise broken, attributed to the components involved."""

    property: str
    components: tuple[str, ...]
    observed: float
    bound: float
    at: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Fact:
    """A subject-specific number the generic engine may display but does not interpret."""

    name: str
    value: float
    component: str | None = None
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Observation:
    at: float
    """Epoch seconds (the monitor's clock) when the observation was taken."""
    components: tuple[ComponentSignals, ...] = ()
    links: tuple[LinkSignals, ...] = ()
    divergences: tuple[Divergence, ...] = ()
    safety: tuple[SafetyViolation, ...] = ()
    facts: tuple[Fact, ...] = field(default=())
    clients_since: float | None = field(default=None, metadata=_RECENT)
    """Epoch seconds of the first request in the client history (None: no history yet):
    when the workload began."""

    def component(self, name: str) -> ComponentSignals | None:
        for c in self.components:
            if c.component == name:
                return c
        return None

    def link(self, source: str, target: str) -> LinkSignals | None:
        for link in self.links:
            if link.source == source and link.target == target:
                return link
        return None

    def summary(self) -> str:
        """One line a failure message can quote."""
        parts = []
        for c in self.components:
            state = "up" if c.reachable else "unreachable"
            if c.reachable and c.ready is False:
                state = "not ready"
            if c.degraded:
                state += ",degraded"
            if c.role is Role.LEADER:
                state += ",leader"
            if c.quorum is False:
                state += ",no-quorum"
            parts.append(f"{c.component}={state}")
        for link in self.links:
            if link.up is False:
                parts.append(f"{link.source}->{link.target}=down")
        if self.divergences:
            parts.append(f"divergences={len(self.divergences)}")
        if self.safety:
            parts.append(f"safety_violations={len(self.safety)}")
        return " ".join(parts) or "(empty observation)"
