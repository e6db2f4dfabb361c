"""The root-cause taxonomy: what a fault is, and what a diagnosis must name.

A chaos fault carries its ground truth as a :class:`RootCause`; a diagnosis engine
answers with ranked root causes of the same shape, so the two compare directly.

Most causes sit at one component (crash, pause, isolation...) or on one link (a
component and its peer). A split of a group of components into parts that cannot
reach one another is located by its groups, written canonically into ``component``
(see :func:`split_cause`): ``"a+b|c+d+e"``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

GROUP_SEP = "|"
MEMBER_SEP = "+"


class FaultKind(enum.StrEnum):
    CRASH = "crash"
    PAUSE = "pause"
    PARTITION = "partition"
    ISOLATION = "isolation"
    """A component cut from every peer, both ways, while it still runs."""
    SPLIT = "split"
    """A group cut into parts (two or more) that cannot reach one another."""
    LATENCY = "latency"
    BANDWIDTH = "bandwidth"
    CLOCK_SKEW = "clock_skew"
    DATA_LOSS = "data_loss"
    MISCONFIGURATION = "misconfiguration"
    OVERLOAD = "overload"


@dataclass(frozen=True, slots=True)
class RootCause:
    """A fault kind located in the topology: a component, and a peer for a link fault.

    For :attr:`FaultKind.SPLIT`, ``component`` holds the canonical groups string of
    :func:`split_cause` and ``peer`` is None.
    """

    kind: FaultKind
    component: str
    peer: str | None = None

    def __str__(self) -> str:
        if self.peer is None:
            return f"{self.kind}({self.component})"
        return f"{self.kind}({self.component} <-> {self.peer})"

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """A split's groups as written in ``component`` (empty for other kinds)."""
        if self.kind is not FaultKind.SPLIT:
            return ()
        return tuple(tuple(g.split(MEMBER_SEP)) for g in self.component.split(GROUP_SEP))

    def _normal(self) -> RootCause:
        """A split of two groups, one of a single member, is that member's isolation."""
        groups = self.groups
        if len(groups) == 2:
            singles = [g[0] for g in groups if len(g) == 1]
            if singles:
                return RootCause(FaultKind.ISOLATION, singles[-1])
        return self

    def matches(self, other: RootCause) -> bool:
        """Same kind at the same place: a link matches in either direction, a split's
        groups in any order (and a split that cuts one member off is its isolation)."""
        a, b = self._normal(), other._normal()
        if a.kind != b.kind:
            return False
        if a.kind is FaultKind.SPLIT:
            return {frozenset(g) for g in a.groups} == {frozenset(g) for g in b.groups}
        if a.peer is None or b.peer is None:
            return a.component == b.component and a.peer == b.peer
        return {a.component, a.peer} == {b.component, b.peer}


def split_cause(groups: Sequence[Sequence[str]], order: Sequence[str] = ()) -> RootCause:
    """The canonical cause of splitting into ``groups``.

    Members are sorted by their place in ``order`` (the spec order; names not in it
    come after, by name) within each group, and groups by their first member. Two
    groups one of which is a single member are that member's ISOLATION; anything
    else is a SPLIT whose ``component`` is ``"a+b|c+d+e"``. A ValueError for fewer
    than two groups, an empty group, or a member in two groups.
    """
    rank = {name: i for i, name in enumerate(order)}

    def key(name: str) -> tuple[int, str]:
        return rank.get(name, len(rank)), name

    parts = [sorted(g, key=key) for g in groups]
    if len(parts) < 2:
        raise ValueError(f"a split needs two groups or more, got {len(parts)}: {list(groups)}")
    if any(not g for g in parts):
        raise ValueError(f"a split's groups cannot be empty: {[list(g) for g in groups]}")
    seen: set[str] = set()
    for g in parts:
        for name in g:
            if name in seen:
                raise ValueError(
                    f"{name} is in two groups of the split {[list(g) for g in groups]}"
                )
            if GROUP_SEP in name or MEMBER_SEP in name:
                raise ValueError(f"component name {name!r} holds {GROUP_SEP!r} or {MEMBER_SEP!r}")
            seen.add(name)
    parts.sort(key=lambda g: key(g[0]))
    if len(parts) == 2:
        singles = [g[0] for g in parts if len(g) == 1]
        if singles:
            # two single members (a split of a pair): the later one, as a minority of one
            return RootCause(FaultKind.ISOLATION, singles[-1])
    return RootCause(FaultKind.SPLIT, GROUP_SEP.join(MEMBER_SEP.join(g) for g in parts))
