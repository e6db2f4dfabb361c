"""What a subject (a system under test) provides to the engine.

A subject is found by name in the ``pytest_operator.subjects`` entry-point group.
It declares how to start an embedded cluster of itself, and, given a running
cluster, opens a :class:`SubjectSession`: its topology, how to observe it (the
generic signals of ``_signals``), its invariants, its actions, how clients
talk to it (a workload ``Requester``) and, for a store, the consistency model its
clients' history must satisfy. The engine sees nothing else of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pytest_operator._actions import Action
    from pytest_operator._cluster import Address, ClusterSpec
    from pytest_operator._history import History
    from pytest_operator._invariants import Invariant
    from pytest_operator._linearizable import Model
    from pytest_operator._signals import Observation
    from pytest_operator._topology import Topology
    from pytest_operator._workload import Requester


@dataclass(frozen=True, slots=True)
class SubjectConfig:
    """How a scenario wants the subject's cluster: node count plus subject options.

    Options come from ``@pytest.mark.subject(name, **options)``; the subject
    validates them. Two scenarios with equal configs share one running cluster.
    """

    nodes: int
    options: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def of(cls, nodes: int, options: Mapping[str, object]) -> SubjectConfig:
        return cls(nodes, tuple(sorted((k, str(v)) for k, v in options.items())))

    def get(self, name: str, default: str) -> str:
        return dict(self.options).get(name, default)


class ClusterView(Protocol):
    """What a subject needs of a running cluster, whichever backend started it."""

    def address(self, name: str, which: str = "main") -> Address:
        """Where the monitor reaches component ``name``'s port ``which`` directly (no
        proxy on the way): ``"main"`` or one of the names in its spec's ``ports``."""
        ...

    def mesh(self) -> tuple[str, ...]:
        """The components at the ends of direct links (a mesh of peers), in spec order."""
        ...

    def client_url(self, name: str, path: str = "") -> str:
        """URL through which clients reach component ``name`` (through its client link)."""
        ...

    def topology(self) -> Topology: ...

    async def restart(self, name: str, *, wipe: bool = False) -> None: ...


class SubjectSession(Protocol):
    topology: Topology
    invariants: Sequence[Invariant]
    actions: Sequence[Action]
    targets: Sequence[str]
    """Components a workload spreads its requests over."""
    model: Model | None
    """The consistency model its clients' history must satisfy (a key-value store: a
    ``Register``), or None. With a model, the workload sends the model's op mix by
    default and ``operator.check_history()`` judges the history against it."""

    async def observe(self) -> Observation: ...

    def requester(self) -> Requester: ...

    async def reset(self) -> None:
        """Bring the subject's own state back to a clean start (the cluster heals faults)."""
        ...

    async def aclose(self) -> None: ...


class Subject(Protocol):
    name: str

    def configure(self, nodes: int, options: Mapping[str, object]) -> SubjectConfig:
        """Validate scenario options; a ValueError names the bad one and the valid ones."""
        ...

    def embedded_spec(self, config: SubjectConfig) -> ClusterSpec: ...

    def open(
        self, cluster: ClusterView, config: SubjectConfig, history: History
    ) -> SubjectSession: ...
