"""A cluster's spec, shared by every backend: components, links, readiness, addresses.

A subject describes its cluster declaratively (:class:`ClusterSpec`): components (a
command line built from the run's :class:`Addresses`, an environment, a readiness check,
whether it runs under libfaketime, what it starts after, named ports besides the main one,
the image it runs in on a container backend) and links (``source -> target``, where
``source`` may be the pseudo-component ``"client"``: the harness and the monitor). A
*backend* runs it (:mod:`pytest_operator._backend`): the embedded one as processes on this
machine (:mod:`pytest_operator._embedded`), the compose one as containers
(:mod:`pytest_operator._compose`). Scenarios and subjects never see which.

Every backend resolves addresses the same way (:class:`Resolver`): every port gets a
number chosen at run time (no fixed port two runs could collide on), every component a
data directory under the run directory, and every link with one caller its own Toxiproxy
proxy, which the caller is given (``addresses.via(source, target)``), so any single link
can be cut while the others stay healthy. A mesh, whose members advertise their own
addresses to each other (Raft peers: per-pair proxy addresses would make each member see a
different cluster), uses *direct* links (:func:`mesh_links`): each member gets its own
loopback host (``127.77.<slot>.<i>``) and its own uid and reaches its peers at their real
addresses; a fault on such a link is an iptables rule between two hosts
(:mod:`pytest_operator._netfilter`). The monitor and Toxiproxy reach every component from
``127.0.0.1``, which no fault rule names: an isolated member still answers the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_operator._process import ProcessError, free_ports_at
from pytest_operator._topology import ComponentKind

if TYPE_CHECKING:
    from pytest_operator._embedded import EmbeddedCluster as EmbeddedCluster

CLIENT = "client"  # the pseudo-component for the harness and the monitor
TOXIPROXY = "toxiproxy"  # the process name of toxiproxy-server (never a component)
HOST = "127.0.0.1"
MAIN = "main"  # the name of every component's main port
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ClusterError(RuntimeError):
    """The cluster spec is invalid, or the cluster could not start."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, scheme: str = "http", path: str = "") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"


# --- readiness checks -------------------------------------------------------------------


class ReadyCheck(Protocol):
    """Is the component listening at ``address`` ready? Must return quickly (bounded)."""

    async def __call__(self, address: Address) -> bool: ...


@dataclass(frozen=True, slots=True)
class TcpReady:
    """Ready when the port accepts a TCP connection."""

    timeout: float = 0.5

    async def __call__(self, address: Address) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                _, writer = await asyncio.open_connection(address.host, address.port)
        except (OSError, TimeoutError):
            return False
        await _close(writer)
        return True


@dataclass(frozen=True, slots=True)
class HttpReady:
    """Ready when ``GET path`` answers 2xx."""

    path: str = "/healthz"
    timeout: float = 1.0

    async def __call__(self, address: Address) -> bool:
        status = await http_status(address, self.path, self.timeout)
        return status is not None and 200 <= status < 300


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def http_status(address: Address, path: str, timeout: float = 1.0) -> int | None:
    """The status of a bare ``GET path`` (HTTP/1.1, no body read), or None if unreachable."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").encode()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address.host, address.port)
            try:
                writer.write(request)
                await writer.drain()
                line = await reader.readline()
            finally:
                await _close(writer)
    except (OSError, TimeoutError):
        return None
    parts = line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


# --- the spec ---------------------------------------------------------------------------


class Addresses(Protocol):
    """What a component's command line, environment and files may refer to."""

    def port(self, name: str, which: str = MAIN) -> int:
        """Component ``name``'s port ``which``: ``"main"`` or one of its spec's ``ports``."""
        ...

    def address(self, name: str, which: str = MAIN) -> Address:
        """``Address(host(name), port(name, which))``."""
        ...

    def host(self, name: str) -> str:
        """``127.0.0.1``, or the component's own loopback host (own_host, mesh member)."""
        ...

    def via(self, source: str, target: str) -> Address:
        """Where ``source`` reaches ``target``: the listen address of that link's proxy."""
        ...

    def data_dir(self, name: str) -> Path:
        """The component's data directory (owned by its uid when it runs as its own)."""
        ...


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """One process of the subject.

    ``command`` and ``env`` are called with the run's :class:`Addresses` once the ports
    and proxies exist. ``data_dir`` (``addresses.data_dir(name)``) is emptied by a restart
    with data loss. ``files`` (relative path -> text) are written into the data dir before
    every start, so a generated config file is there again after a wipe. ``fake_clock`` runs
    it under libfaketime with an offset that can change while it runs; ``clock_note`` says
    why its clock cannot be skewed at all (a clock skew fault on it is refused with this
    text). An ``observer`` (a metrics scraper, say) is started, reset and stopped with the
    cluster but is not part of the system under test: it has no links and
    a cluster's ``topology()`` leaves it out, so no diagnosis can blame it.

    Every component has a main port (``addresses.port(name)``, where its readiness is
    checked); ``ports`` names extra ones (``("peer",)``: ``addresses.port(name, "peer")``).
    ``own_host`` gives it its own loopback address (``addresses.host(name)``), which it
    should bind; the ends of direct links get one (and their own uid) automatically.

    ``image`` is what it runs in on a container backend: a name in the project's image
    manifest (``docker/images.toml``: ``"redis"``), or an image reference the engine has
    (``"redis:7.2"``). Its command line is the one above, built on the host, so the image's
    entrypoint must run it (the project's images run a host path's program by its name:
    ``docker/base/host-argv``). The embedded backend ignores it.
    """

    name: str
    kind: ComponentKind
    command: Callable[[Addresses], Sequence[str]]
    env: Callable[[Addresses], Mapping[str, str]] | None = None
    files: Callable[[Addresses], Mapping[str, str]] | None = None
    ready: ReadyCheck = field(default_factory=TcpReady)
    fake_clock: bool = False
    start_after: tuple[str, ...] = ()
    ready_timeout: float = 20.0
    stop_timeout: float = 5.0
    observer: bool = False
    ports: tuple[str, ...] = ()
    own_host: bool = False
    clock_note: str | None = None
    image: str | None = None


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """``source`` calls ``target`` through a Toxiproxy proxy named ``source->target``; or,
    ``direct``, at ``target``'s own address with no proxy (both ends then get their own
    host and uid, and a fault on the link is an iptables rule between the two hosts)."""

    source: str
    target: str
    direct: bool = False

    @property
    def proxy_name(self) -> str:
        return f"{self.source}->{self.target}"


def mesh_links(names: Sequence[str]) -> tuple[LinkSpec, ...]:
    """Direct links between every ordered pair of ``names`` (a Raft cluster's peers)."""
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ClusterError(f"mesh_links: duplicate names: {', '.join(dupes)}")
    return tuple(LinkSpec(a, b, direct=True) for a in names for b in names if a != b)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    components: tuple[ComponentSpec, ...]
    links: tuple[LinkSpec, ...] = ()

    def __post_init__(self) -> None:
        names = [c.name for c in self.components]
        if not names:
            raise ClusterError("a cluster needs at least one component")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ClusterError(f"duplicate component names: {', '.join(dupes)}")
        for reserved in (CLIENT, TOXIPROXY):
            if reserved in names:
                raise ClusterError(f"{reserved!r} is reserved and cannot name a component")
        known = set(names)
        valid = ", ".join(names)
        for c in self.components:
            for dep in c.start_after:
                if dep not in known:
                    raise ClusterError(
                        f"component {c.name!r} starts after unknown {dep!r} (components: {valid})"
                    )
            if MAIN in c.ports or "" in c.ports or len(set(c.ports)) != len(c.ports):
                raise ClusterError(
                    f"component {c.name!r}: extra port names must be distinct, non-empty and "
                    f"not {MAIN!r} (got {', '.join(map(repr, c.ports))})"
                )
        seen: set[tuple[str, str]] = set()
        observers = {c.name for c in self.components if c.observer}
        for link in self.links:
            for end in (link.source, link.target):
                if end in observers:
                    raise ClusterError(
                        f"link {link.proxy_name}: {end!r} is an observer, not part of the "
                        "system under test, and has no links"
                    )
            if link.direct and CLIENT in (link.source, link.target):
                raise ClusterError(
                    f"link {link.proxy_name} is direct, but {CLIENT!r} (the harness and the "
                    "monitor) has no host of its own to cut: give it a Toxiproxy link "
                    "(direct=False)"
                )
            if link.source not in known and link.source != CLIENT:
                raise ClusterError(
                    f"link {link.proxy_name}: unknown source {link.source!r} "
                    f"(components: {valid}, or {CLIENT!r})"
                )
            if link.target not in known:
                raise ClusterError(
                    f"link {link.proxy_name}: unknown target {link.target!r} (components: {valid})"
                )
            if (link.source, link.target) in seen:
                raise ClusterError(f"duplicate link {link.proxy_name}")
            seen.add((link.source, link.target))
        self.waves()  # raises on a cycle

    def component_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def mesh(self) -> tuple[str, ...]:
        """The components at the ends of direct links, in spec order."""
        ends = {end for lk in self.links if lk.direct for end in (lk.source, lk.target)}
        return tuple(c.name for c in self.components if c.name in ends)

    def has_own_host(self, name: str) -> bool:
        return self.component(name).own_host or name in self.mesh()

    def component(self, name: str) -> ComponentSpec:
        for c in self.components:
            if c.name == name:
                return c
        valid = ", ".join(c.name for c in self.components)
        raise KeyError(f"no component {name!r} (components: {valid})")

    def waves(self) -> tuple[tuple[str, ...], ...]:
        """Components grouped by start order: each wave only after the previous ones."""
        remaining = {c.name: set(c.start_after) for c in self.components}
        done: set[str] = set()
        waves = []
        while remaining:
            ready = tuple(n for n, deps in remaining.items() if deps <= done)
            if not ready:
                raise ClusterError(f"start_after has a cycle among: {', '.join(sorted(remaining))}")
            waves.append(ready)
            done.update(ready)
            for n in ready:
                del remaining[n]
        return tuple(waves)


# --- addresses ------------------------------------------------------------------------


class ProxiesPending(Exception):
    """A command asked for a proxy address before toxiproxy created the proxies."""


@dataclass(frozen=True, slots=True)
class Resolver:
    """The run's addresses (:class:`Addresses`): ports, hosts, uids, proxies, data dirs."""

    ports: Mapping[str, Mapping[str, int]]  # component -> port name -> port
    hosts: Mapping[str, str]  # components with a host of their own
    uids: Mapping[str, int]  # components that run as their own uid
    links: Sequence[tuple[str, str]]  # proxied links
    direct: frozenset[tuple[str, str]]
    proxies: dict[tuple[str, str], int]  # filled once toxiproxy has created them
    data_root: Path

    def _ports_of(self, name: str) -> Mapping[str, int]:
        try:
            return self.ports[name]
        except KeyError:
            raise KeyError(f"no component {name!r} (components: {', '.join(self.ports)})") from None

    def port(self, name: str, which: str = MAIN) -> int:
        ports = self._ports_of(name)
        try:
            return ports[which]
        except KeyError:
            raise KeyError(
                f"component {name!r} has no port {which!r} (ports: {', '.join(ports)})"
            ) from None

    def host(self, name: str) -> str:
        self._ports_of(name)
        return self.hosts.get(name, HOST)

    def address(self, name: str, which: str = MAIN) -> Address:
        return Address(self.host(name), self.port(name, which))

    def via(self, source: str, target: str) -> Address:
        if (source, target) in self.direct:
            raise KeyError(
                f"link {source} -> {target} is direct (no proxy): {source} reaches "
                f"{target} at its own address, addresses.address({target!r})"
            )
        if (source, target) not in self.links:
            links = ", ".join(f"{s}->{t}" for s, t in self.links)
            raise KeyError(f"no link {source} -> {target} (links: {links})")
        if (source, target) not in self.proxies:
            raise ProxiesPending
        return Address(HOST, self.proxies[(source, target)])

    def uid(self, name: str) -> int | None:
        self._ports_of(name)
        return self.uids.get(name)

    def data_dir(self, name: str) -> Path:
        uid = self.uid(name)
        path = self.data_root / f"{name}.data"
        path.mkdir(parents=True, exist_ok=True)
        if uid is not None and path.stat().st_uid != uid:
            os.chown(path, uid, uid)
        return path


def default_run_base() -> Path:
    """``$PYTEST_OPERATOR_RUN_DIR`` or ``<project>/.run/clusters``.

    Only run directories live there: the stale-run cleanup of every cluster start removes
    any folder in it whose owner is gone, so the plugin's reports (``.run/cases/``) stay
    out of it. One base serves every pytest-xdist worker: each run directory is named
    with its owner's PID and the cleanup leaves a live owner's alone.
    """
    return Path(os.environ.get("PYTEST_OPERATOR_RUN_DIR") or _PROJECT_ROOT / ".run" / "clusters")


def format_offset(seconds: float) -> str:
    """A libfaketime relative offset: ``+120``, ``-30.5``."""
    return f"{seconds:+g}"


def resolve_addresses(
    spec: ClusterSpec,
    data_root: Path,
    hosts: Mapping[str, str] | None = None,
    uids: Mapping[str, int] | None = None,
) -> tuple[Resolver, int]:
    """The run's addresses: a free port for every port of every component (on its host:
    ``hosts`` gives those with their own, ``uids`` those that run as their own uid), and
    one more on 127.0.0.1 for Toxiproxy's API, all bound at once, so none repeats on a
    host. Proxies are filled in once Toxiproxy has created them (it binds port 0)."""
    hosts = dict(hosts or {})
    wanted = [
        (c.name, which, hosts.get(c.name, HOST))
        for c in spec.components
        for which in (MAIN, *c.ports)
    ]
    *numbers, api_port = free_ports_at([*(host for _, _, host in wanted), HOST])
    ports: dict[str, dict[str, int]] = {c.name: {} for c in spec.components}
    for (name, which, _), number in zip(wanted, numbers, strict=True):
        ports[name][which] = number
    resolver = Resolver(
        ports=ports,
        hosts=hosts,
        uids=dict(uids or {}),
        links=[(lk.source, lk.target) for lk in spec.links if not lk.direct],
        direct=frozenset((lk.source, lk.target) for lk in spec.links if lk.direct),
        proxies={},
        data_root=data_root,
    )
    return resolver, api_port


def faketime_env(library: str, clock_file: Path, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with what runs a program under libfaketime (``library``) at the offset that
    ``clock_file`` holds, read again at every call, so it can change while the program runs
    (monotonic time untouched)."""
    preload = " ".join(p for p in (library, env.get("LD_PRELOAD")) if p)
    return {
        **env,
        "LD_PRELOAD": preload,
        "FAKETIME_TIMESTAMP_FILE": str(clock_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def __getattr__(name: str) -> Any:
    """``EmbeddedCluster`` moved to :mod:`pytest_operator._embedded`; importable from here
    as before (imported on first use: it imports this module)."""
    if name == "EmbeddedCluster":
        from pytest_operator._embedded import EmbeddedCluster

        return EmbeddedCluster
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLIENT",
    "MAIN",
    "Address",
    "Addresses",
    "ClusterError",
    "ClusterSpec",
    "ComponentSpec",
    "EmbeddedCluster",
    "HttpReady",
    "LinkSpec",
    "ProcessError",
    "ReadyCheck",
    "TcpReady",
    "mesh_links",
]
