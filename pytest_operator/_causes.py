"""The root-cause taxonomy: what a fault is, and what a diagnosis must name.

A chaos fault carries its ground truth as a :class:`RootCause`; a diagnosis engine
answers with ranked root causes of the same shape, so the two compare directly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FaultKind(enum.StrEnum):
    CRASH = "crash"
    PAUSE = "pause"
    PARTITION = "partition"
    LATENCY = "latency"
    BANDWIDTH = "bandwidth"
    CLOCK_SKEW = "clock_skew"
    DATA_LOSS = "data_loss"
    MISCONFIGURATION = "misconfiguration"
    OVERLOAD = "overload"


@dataclass(frozen=True, slots=True)
class RootCause:
    """A fault kind located in the topology: a component, and a peer for a link fault."""

    kind: FaultKind
    component: str
    peer: str | None = None

    def __str__(self) -> str:
        if self.peer is None:
            return f"{self.kind}({self.component})"
        return f"{self.kind}({self.component} <-> {self.peer})"

    def matches(self, other: RootCause) -> bool:
        """Same kind at the same place; a link matches in either direction."""
        if self.kind != other.kind:
            return False
        if self.peer is None or other.peer is None:
            return self.component == other.component and self.peer == other.peer
        return {self.component, self.peer} == {other.component, other.peer}
