"""Invariants: named checks over one observation, with a category and a grace period.

A check returns the :class:`Finding` s that break the invariant in this observation,
one per component (or link) at fault. The monitor turns a finding that persists for
the invariant's grace period into a :class:`Violation`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_operator._signals import Observation


class Category(enum.StrEnum):
    AVAILABILITY = "availability"
    LATENCY = "latency"
    SAFETY = "safety"
    CONSISTENCY = "consistency"


@dataclass(frozen=True, slots=True)
class Finding:
    """One place where an invariant does not hold right now."""

    component: str
    message: str
    value: float | None = None


Check = Callable[[Observation], Sequence[Finding]]


@dataclass(frozen=True, slots=True)
class Invariant:
    name: str
    category: Category
    check: Check
    description: str = ""
    grace: float = 0.0
    """Seconds a finding must persist before it counts as a violation."""
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"invariant name {self.name!r} must be a non-empty identifier")
        if self.grace < 0:
            raise ValueError(f"invariant {self.name}: grace {self.grace} must be >= 0")


@dataclass(frozen=True, slots=True)
class Violation:
    """An invariant broken at one component, from its first sighting until it cleared."""

    invariant: str
    category: Category
    component: str
    message: str
    first_seen: float
    """Epoch seconds of the first observation that showed it."""
    confirmed_at: float
    """Epoch seconds when it had lasted the grace period: the moment of detection."""
    cleared_at: float | None = None
    value: float | None = None

    def describe(self) -> str:
        return f"{self.invariant}@{self.component}: {self.message}"


def history_invariant(
    name: str,
    property: str,
    category: Category = Category.CONSISTENCY,
    *,
    description: str = "",
    grace: float = 0.0,
) -> Invariant:
    """An invariant over what a history checker found: every safety violation the
    observation carries for ``property`` (a checker's name, as in
    ``SafetyViolation.property``) is a finding at each component it names. A subject
    whose observer runs a history checker (a linearizability watch, say) declares it so."""

    def check(obs: Observation) -> list[Finding]:
        return [
            Finding(component, v.detail or f"{property} broken", v.observed)
            for v in obs.safety
            if v.property == property
            for component in v.components
        ]

    return Invariant(
        name,
        category,
        check,
        description=description or f"the client history satisfies {property}",
        grace=grace,
    )
