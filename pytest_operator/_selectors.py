"""Component selectors: ``leader()`` and ``follower(i)`` stand for a component in a fault
(``kill(leader())``, ``isolate(follower(1))``) and are resolved when the fault is injected,
from the subject's own observation, never before: who leads is a fact of the running
cluster, not of the spec.

The leader is the member that reports the role LEADER and that a majority of the members
agree on (it counts for itself; a member votes by the leader it reports), so a deposed
leader cut off in a minority is never picked. The followers are the other members that
report FOLLOWER under that leader, in spec order. Resolution polls ``observe()`` until it
sees one, bounded (``SELECT_TIMEOUT_S``), then fails with what it last saw.

The group builders of a split are here too: a minority of followers, and groups none of
which holds a majority.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from pytest_operator._signals import Role

if TYPE_CHECKING:
    from pytest_operator._signals import Observation

SELECT_TIMEOUT_S = 15.0
"""How long a selector waits for the members to agree on a leader (an election on a loaded
machine, after a previous scenario's fault)."""
_POLL_S = 0.25

T = TypeVar("T")


class SelectorError(RuntimeError):
    """A selector found no such component in time (no leader agreed, too few followers)."""


class Observable(Protocol):
    """What a selector needs of a chaos target."""

    async def observe(self) -> Observation: ...
    def mesh(self) -> tuple[str, ...]: ...


class Selector(abc.ABC):
    """A component chosen at injection time from the subject's observation."""

    __slots__ = ()

    @abc.abstractmethod
    def describe(self) -> str: ...

    def __str__(self) -> str:
        return self.describe()

    @abc.abstractmethod
    async def resolve(self, target: Observable) -> str:
        """The component's name now (polls ``observe()``, bounded)."""


Who = str | Selector
"""A component: its name, or a selector resolved when the fault is injected."""


def name_of(who: Who) -> str:
    """The name of an already resolved component."""
    if isinstance(who, str):
        return who
    raise SelectorError(
        f"{who} is resolved when its fault is injected (Fault.inject binds it first)"
    )


async def resolve(who: Who, target: Observable) -> str:
    return who if isinstance(who, str) else await who.resolve(target)


@dataclass(frozen=True, slots=True)
class Roles:
    """Who leads and who follows, in one observation, as a majority of members sees it."""

    members: tuple[str, ...]
    leader: str | None
    followers: tuple[str, ...]
    seen: str
    """One line of what each member reported (for error messages)."""

    @classmethod
    def of(cls, observation: Observation, mesh: Sequence[str]) -> Roles:
        members = tuple(mesh) or tuple(
            c.component for c in observation.components if c.role is not None
        )
        signals = {m: observation.component(m) for m in members}
        live = {m: s for m, s in signals.items() if s is not None and s.reachable}
        majority = len(members) // 2 + 1
        best: tuple[tuple[int, int], str] | None = None
        for m, s in live.items():
            if s.role is not Role.LEADER:
                continue
            votes = sum(1 for o, so in live.items() if o == m or so.leader == m)
            rank = (votes, s.term or 0)
            if votes >= majority and (best is None or rank > best[0]):
                best = (rank, m)
        leader = best[1] if best is not None else None
        followers = tuple(
            m
            for m, s in live.items()
            if leader is not None and m != leader and s.role is Role.FOLLOWER and s.leader == leader
        )
        parts = []
        for m in members:
            seen = signals[m]
            if seen is None:
                parts.append(f"{m}=unobserved")
            elif not seen.reachable:
                parts.append(f"{m}=unreachable")
            else:
                role = seen.role or "no role"
                parts.append(f"{m}={role}(leader {seen.leader}, term {seen.term})")
        return cls(members, leader, followers, " ".join(parts) or "(no members)")


async def observe_until(
    target: Observable, pick: Callable[[Roles], T | None], what: str, timeout: float
) -> T:
    """Poll the target's observation until ``pick`` finds what it wants in the roles."""
    deadline = time.monotonic() + timeout
    last: Roles | None = None
    while True:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 1.0)):
                observation = await target.observe()
        except TimeoutError:
            pass
        else:
            last = Roles.of(observation, target.mesh())
            found = pick(last)
            if found is not None:
                return found
        if time.monotonic() >= deadline:
            seen = last.seen if last is not None else "no observation"
            raise SelectorError(f"{what} within {timeout:g} s; last seen: {seen}")
        await asyncio.sleep(_POLL_S)


@dataclass(frozen=True, slots=True)
class Leader(Selector):
    """The member a majority agrees leads."""

    timeout: float = SELECT_TIMEOUT_S

    def describe(self) -> str:
        return "leader()"

    async def resolve(self, target: Observable) -> str:
        return await observe_until(
            target, lambda r: r.leader, "leader(): no leader agreed by a majority", self.timeout
        )


@dataclass(frozen=True, slots=True)
class Follower(Selector):
    """The ``index``-th follower (spec order) of the agreed leader."""

    index: int = 0
    timeout: float = SELECT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"follower index must be 0 or more, got {self.index}")

    def describe(self) -> str:
        return f"follower({self.index})"

    async def resolve(self, target: Observable) -> str:
        def pick(roles: Roles) -> str | None:
            return roles.followers[self.index] if len(roles.followers) > self.index else None

        return await observe_until(
            target,
            pick,
            f"follower({self.index}): fewer than {self.index + 1} follower(s) of an agreed leader",
            self.timeout,
        )


def leader(*, timeout: float = SELECT_TIMEOUT_S) -> Leader:
    """The current leader, resolved when the fault is injected."""
    return Leader(timeout)


def follower(index: int = 0, *, timeout: float = SELECT_TIMEOUT_S) -> Follower:
    """The ``index``-th follower of the current leader (spec order), resolved at injection."""
    return Follower(index, timeout)


# --- split groups -----------------------------------------------------------------------


async def minority_groups(
    target: Observable, timeout: float = SELECT_TIMEOUT_S
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(minority, majority): the first ``(n - 1) // 2`` followers (at least one) of the
    agreed leader, and everyone else (the leader among them), each in spec order."""

    def pick(roles: Roles) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        size = max((len(roles.members) - 1) // 2, 1)
        if len(roles.followers) < size:
            return None
        minority = roles.followers[:size]
        return minority, tuple(m for m in roles.members if m not in minority)

    return await observe_until(
        target, pick, "split_minority(): no agreed leader with enough followers", timeout
    )


def no_quorum_groups(members: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Groups of at most ``n // 2`` members (spec order), so none holds a majority:
    3 -> 1|1|1, 4 -> 2|2, 5 -> 2|2|1."""
    if len(members) < 2:
        raise ValueError(f"a split needs two members or more, got {list(members)}")
    size = len(members) // 2
    return tuple(tuple(members[i : i + size]) for i in range(0, len(members), size))


__all__ = [
    "SELECT_TIMEOUT_S",
    "Follower",
    "Leader",
    "Roles",
    "Selector",
    "SelectorError",
    "Who",
    "follower",
    "leader",
    "minority_groups",
    "name_of",
    "no_quorum_groups",
    "resolve",
]
