"""Diagnoses: what every engine answers, and the evidence it is given.

An engine receives a :class:`Case` (the topology, the monitor's timeline of
observations and the violations it confirmed, and the subject's action catalogue)
and returns a :class:`Diagnosis`: root-cause hypotheses ranked best first, each with
a confidence and the evidence for and against it (pointing at timeline moments),
plus recommended actions from the catalogue. Engines never see the injected fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._invariants import Violation
from pytest_operator._signals import Observation
from pytest_operator._topology import Topology


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """An action of the subject's catalogue, as an engine may recommend it."""

    name: str
    description: str
    risk: str
    params: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Each parameter's name and its allowed values (empty: free)."""
    # Added after cases were recorded: left out of a case's JSON while at their defaults
    # (the key is _serde.OMIT_DEFAULT, which this module cannot import).
    remedies: tuple[FaultKind, ...] = field(default=(), metadata={"serde_omit_default": True})
    """The fault kinds this action repairs."""
    target: str | None = field(default=None, metadata={"serde_omit_default": True})
    """The parameter that names the component it acts on."""
    required: tuple[str, ...] = field(default=(), metadata={"serde_omit_default": True})
    """The parameters it cannot run without."""


@dataclass(frozen=True, slots=True)
class Case:
    topology: Topology
    observations: tuple[Observation, ...]
    violations: tuple[Violation, ...]
    actions: tuple[ActionInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class Evidence:
    text: str
    at: float | None = None
    """Epoch seconds of the timeline moment it points at, if one."""


@dataclass(frozen=True, slots=True)
class Hypothesis:
    cause: RootCause
    confidence: float
    score: float = 0.0
    evidence_for: tuple[Evidence, ...] = ()
    evidence_against: tuple[Evidence, ...] = ()


@dataclass(frozen=True, slots=True)
class Recommendation:
    action: str
    args: tuple[tuple[str, str], ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    engine: str
    hypotheses: tuple[Hypothesis, ...]
    """Best first; empty means the engine sees no fault."""
    recommendations: tuple[Recommendation, ...] = ()
    latency_s: float = 0.0
    input_tokens: int | None = None
    output_tokens: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def top(self) -> Hypothesis | None:
        return self.hypotheses[0] if self.hypotheses else None

    def rank_of(self, cause: RootCause) -> int | None:
        """1-based rank of the first hypothesis matching ``cause``; None if absent."""
        for i, h in enumerate(self.hypotheses, 1):
            if h.cause.matches(cause):
                return i
        return None

    def top_causes(self, k: int = 3) -> str:
        return ", ".join(f"{i}. {h.cause}" for i, h in enumerate(self.hypotheses[:k], 1)) or "none"

    def to_markdown(self) -> str:
        lines = [f"## Diagnosis ({self.engine}, {self.latency_s * 1000:.0f} ms)"]
        if self.input_tokens is not None:
            lines.append(f"Tokens: {self.input_tokens} in, {self.output_tokens} out")
        if not self.hypotheses:
            lines.append("\nNo fault: nothing in the timeline calls for one.")
        for i, h in enumerate(self.hypotheses, 1):
            lines.append(f"\n### {i}. {h.cause} (confidence {h.confidence:.0%})")
            for e in h.evidence_for:
                lines.append(f"- for: {e.text}")
            for e in h.evidence_against:
                lines.append(f"- against: {e.text}")
        if self.recommendations:
            lines.append("\n### Recommended actions")
            for r in self.recommendations:
                args = ", ".join(f"{k}={v}" for k, v in r.args)
                lines.append(f"- `{r.action}({args})`: {r.reason}")
        for note in self.notes:
            lines.append(f"\n> {note}")
        return "\n".join(lines) + "\n"


class DiagnosisEngine(Protocol):
    name: str

    async def diagnose(self, case: Case) -> Diagnosis: ...


class EngineUnavailable(Exception):
    """The engine cannot run here (no key, no network); never replaced by another silently."""


def recommend(
    hypotheses: Sequence[Hypothesis], actions: Sequence[ActionInfo]
) -> tuple[Recommendation, ...]:
    """Generic remediation for the top hypothesis: every catalogue action that declares it
    remedies the cause's kind, aimed at the cause's component through its ``target``
    parameter (when that parameter accepts the component and nothing else is required),
    or, with no target, acting on the whole subject (when it requires no parameter).
    Action names are never read."""
    out: list[Recommendation] = []
    for h in hypotheses[:1]:
        component = h.cause.component
        for a in actions:
            if h.cause.kind not in a.remedies:
                continue
            if a.target is None:
                if not a.required:  # cluster-wide: nothing for the engine to fill
                    out.append(Recommendation(a.name, (), f"remedies {h.cause.kind}"))
                continue
            choices = dict(a.params).get(a.target, ())
            if choices and component not in choices:
                continue
            if set(a.required) - {a.target}:
                continue  # the engine cannot fill the other parameters
            out.append(
                Recommendation(
                    a.name, ((a.target, component),), f"remedies {h.cause.kind} of {component}"
                )
            )
    return tuple(out)
