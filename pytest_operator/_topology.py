"""The subject's shape in generic terms: components, the links between them, and
the fault points that realise each (a Toxiproxy proxy for a link, a process for a
component). Fault-injection machinery is never a component: a proxy belongs to
the link it sits on. A link with no proxy is direct: its source reaches the target's
own address (members of a mesh, cut with iptables rules between their hosts).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ComponentKind(enum.StrEnum):
    SERVICE = "service"
    DATASTORE = "datastore"
    COORDINATOR = "coordinator"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    kind: ComponentKind
    process: str | None = None  # the managed process that realises it, if any


@dataclass(frozen=True, slots=True)
class Link:
    """``source`` calls ``target``; ``proxy`` is the Toxiproxy proxy on the way, or None for
    a direct link."""

    source: str
    target: str
    proxy: str | None = None

    @property
    def name(self) -> str:
        return f"{self.source} -> {self.target}"


@dataclass(frozen=True, slots=True)
class Topology:
    components: tuple[Component, ...]
    links: tuple[Link, ...] = field(default=())

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        valid = ", ".join(c.name for c in self.components)
        raise KeyError(f"no component {name!r} (components: {valid})")

    def link(self, source: str, target: str) -> Link:
        for link in self.links:
            if link.source == source and link.target == target:
                return link
        valid = ", ".join(link.name for link in self.links)
        raise KeyError(f"no link {source} -> {target} (links: {valid})")

    def links_of(self, name: str) -> tuple[Link, ...]:
        return tuple(lk for lk in self.links if name in (lk.source, lk.target))

    def peers(self, name: str) -> tuple[str, ...]:
        """The other ends of ``name``'s direct links (either direction), in component
        order."""
        ends = {
            lk.target if lk.source == name else lk.source
            for lk in self.links
            if lk.proxy is None and name in (lk.source, lk.target)
        }
        return tuple(c.name for c in self.components if c.name in ends and c.name != name)
