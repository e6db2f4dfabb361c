"""The embedded cluster backend: real processes on loopback, links through Toxiproxy or
direct (a mesh, cut with iptables).

A subject describes its cluster declaratively (:class:`ClusterSpec`): components (a
command line built from the run's :class:`Addresses`, an environment, a readiness check,
whether it runs under libfaketime, what it starts after, named ports besides the main one)
and links (``source -> target``, where ``source`` may be the pseudo-component ``"client"``:
the harness and the monitor). :class:`EmbeddedCluster` gives every port a number chosen at
run time, starts ``toxiproxy-server``, creates one proxy per link (so any single link can be
cut while the others stay healthy), starts the components in dependency order (independent
ones in parallel) and waits until all are ready.

Two kinds of link. A link with one caller (a service and its store, the client and a node)
goes through its own Toxiproxy proxy: the caller is given the proxy's address
(``addresses.via(source, target)``). A mesh, whose members advertise their own addresses to
each other (Raft peers: per-pair proxy addresses would make each member see a different
cluster), uses *direct* links (:func:`mesh_links`): each member gets its own loopback host
(``127.77.<slot>.<i>``) and its own uid, and reaches its peers at their real addresses;
one SNAT rule per member makes its packets leave from its own host, so a fault is an
iptables DROP rule between two hosts (:mod:`pytest_operator._netfilter`). Hosts and uids
come from a machine-wide slot, so concurrent runs never share one. A component may also
ask for its own host without being in a mesh (``own_host``). The monitor and Toxiproxy
reach every component from ``127.0.0.1``, which no fault rule names: an isolated member
still answers the monitor.

``stop()`` stops everything in reverse order and removes the run's iptables rules, also
after a partial start, on Ctrl-C (``KeyboardInterrupt`` / ``CancelledError``) and, as a
last resort, from an ``atexit`` hook; a run killed outright is cleaned up by the next start
(processes: :class:`~pytest_operator._process.RunDirectory`; rules:
:func:`~pytest_operator._netfilter.cleanup_stale`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from pytest_operator._binaries import find_libfaketime, find_toxiproxy_server
from pytest_operator._netfilter import (
    Netfilter,
    NetfilterError,
    NetSlot,
    cleanup_stale,
    iptables_missing,
)
from pytest_operator._process import (
    ManagedProcess,
    ProcessError,
    RunDirectory,
    free_ports_at,
    kill_now_all,
)
from pytest_operator._topology import Component, ComponentKind, Link, Topology
from pytest_operator._toxiproxy import ProxySpec, ToxiproxyClient

if TYPE_CHECKING:
    from pytest_operator._signals import Observation

log = logging.getLogger(__name__)

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
    :meth:`EmbeddedCluster.topology` leaves it out, so no diagnosis can blame it.

    Every component has a main port (``addresses.port(name)``, where its readiness is
    checked); ``ports`` names extra ones (``("peer",)``: ``addresses.port(name, "peer")``).
    ``own_host`` gives it its own loopback address (``addresses.host(name)``), which it
    should bind; the ends of direct links get one (and their own uid) automatically.
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


# --- the cluster ------------------------------------------------------------------------


class _ProxiesPending(Exception):
    """A command asked for a proxy address before toxiproxy created the proxies."""


@dataclass(frozen=True, slots=True)
class _Resolver:
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
            raise _ProxiesPending
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


def _unreachable_ancestor(path: Path) -> Path | None:
    """The first of ``path`` and its parents that other users cannot traverse, if any."""
    for p in (path, *path.parents):
        if not p.stat().st_mode & stat.S_IXOTH:
            return p
    return None


def format_offset(seconds: float) -> str:
    """A libfaketime relative offset: ``+120``, ``-30.5``."""
    return f"{seconds:+g}"


class EmbeddedCluster:
    """``async with EmbeddedCluster(spec) as cluster: ...`` (or ``start()`` / ``stop()``)."""

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        base_dir: Path | str | None = None,
        toxiproxy_server: Path | str | None = None,
    ) -> None:
        self.spec = spec
        self.base_dir = Path(base_dir) if base_dir is not None else default_run_base()
        self._toxiproxy_bin = Path(toxiproxy_server) if toxiproxy_server else None
        self._run_dir: RunDirectory | None = None
        self._resolver: _Resolver | None = None
        self._toxiproxy_proc: ManagedProcess | None = None
        self._toxiproxy: ToxiproxyClient | None = None
        self._procs: dict[str, ManagedProcess] = {}
        self._clock_offsets: dict[str, float] = {}
        self._slot: NetSlot | None = None
        self._netfilter: Netfilter | None = None
        self._started = False
        self.ready_seconds: float | None = None  # start() to all ready, last start

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"EmbeddedCluster({', '.join(c.name for c in self.spec.components)}; {state})"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise ClusterError("cluster already started")
        began = time.monotonic()
        self._started = True
        atexit.register(self._kill_all_now)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self.ready_seconds = time.monotonic() - began

    async def _start(self) -> None:
        toxiproxy_bin = self._toxiproxy_bin or await asyncio.to_thread(find_toxiproxy_server)
        libfaketime = None
        if any(c.fake_clock for c in self.spec.components):
            libfaketime = find_libfaketime()
        mesh = self.spec.mesh()
        if mesh:
            problem = iptables_missing()
            if problem is not None:
                raise ClusterError(
                    f"the direct links between {', '.join(mesh)} are cut with iptables rules, "
                    f"which need root and iptables: {problem}"
                )
        self._run_dir = run_dir = RunDirectory.create(self.base_dir)
        self._resolver, api_port = self._resolve(run_dir)
        resolver = self._resolver
        if mesh:
            self._check_reachable(run_dir.path)
            self._netfilter = Netfilter(self._net_slot())
            try:
                self._netfilter.start({resolver.uids[n]: resolver.hosts[n] for n in mesh})
            except NetfilterError as exc:
                raise ClusterError(f"could not set up the mesh's iptables rules: {exc}") from exc
        elif iptables_missing() is None:
            # every start cleans up after dead runs, like the stale run directories
            try:
                await asyncio.to_thread(cleanup_stale)
            except NetfilterError as exc:
                log.warning("could not clean up stale iptables rules: %s", exc)

        api = Address(HOST, api_port)
        self._toxiproxy_proc = ManagedProcess(
            TOXIPROXY,
            [str(toxiproxy_bin), "-host", HOST, "-port", str(api.port)],
            run_dir=run_dir,
        )
        self._toxiproxy = ToxiproxyClient(api.url())
        await self._toxiproxy_proc.start()

        # While toxiproxy-server starts, so do the first wave's components whose command
        # needs no proxy address (a datastore, typically).
        waves = self.spec.waves()
        deferred = []
        for name in waves[0]:
            try:
                self._procs[name] = self._make_process(
                    self.spec.component(name), resolver, libfaketime
                )
                await self._start_component(name)
            except _ProxiesPending:
                deferred.append(name)

        # Proxies listen on port 0: toxiproxy binds them and reports the real port, so
        # no other process can take a proxy's port between choosing and binding it.
        await self._toxiproxy_proc.wait_ready(lambda: HttpReady("/version")(api), timeout=10)
        proxied = [lk for lk in self.spec.links if not lk.direct]
        created = (
            await self._toxiproxy.populate(
                [
                    ProxySpec(lk.proxy_name, f"{HOST}:0", str(resolver.address(lk.target)))
                    for lk in proxied
                ]
            )
            if proxied
            else ()
        )
        by_name = {p.name: p.listen_port for p in created}
        resolver.proxies.update({(lk.source, lk.target): by_name[lk.proxy_name] for lk in proxied})
        for c in self.spec.components:
            if c.name not in self._procs:
                self._procs[c.name] = self._make_process(c, resolver, libfaketime)
        for name in deferred:
            await self._start_component(name)
        await asyncio.gather(*(self.wait_ready(name) for name in waves[0]))
        for wave in waves[1:]:
            for name in wave:
                await self._start_component(name)
            await asyncio.gather(*(self.wait_ready(name) for name in wave))

    def _net_slot(self) -> NetSlot:
        if self._slot is None:
            try:
                self._slot = NetSlot.acquire()
            except NetfilterError as exc:
                raise ClusterError(str(exc)) from exc
        return self._slot

    def _resolve(self, run_dir: RunDirectory) -> tuple[_Resolver, int]:
        """Hosts, uids and ports of every component (hosts and uids from this run's slot),
        and a port for Toxiproxy's API (all ports bound at once: none repeats on a host)."""
        mesh = set(self.spec.mesh())
        hosts: dict[str, str] = {}
        uids: dict[str, int] = {}
        for number, c in enumerate(self.spec.components, start=1):
            if c.own_host or c.name in mesh:
                hosts[c.name] = self._net_slot().host(number)
            if c.name in mesh:
                uids[c.name] = self._net_slot().uid(number)
        wanted = [
            (c.name, which, hosts.get(c.name, HOST))
            for c in self.spec.components
            for which in (MAIN, *c.ports)
        ]
        *numbers, api_port = free_ports_at([*(host for _, _, host in wanted), HOST])
        ports: dict[str, dict[str, int]] = {c.name: {} for c in self.spec.components}
        for (name, which, _), number in zip(wanted, numbers, strict=True):
            ports[name][which] = number
        resolver = _Resolver(
            ports=ports,
            hosts=hosts,
            uids=uids,
            links=[(lk.source, lk.target) for lk in self.spec.links if not lk.direct],
            direct=frozenset((lk.source, lk.target) for lk in self.spec.links if lk.direct),
            proxies={},
            data_root=run_dir.path,
        )
        return resolver, api_port

    def _check_reachable(self, path: Path) -> None:
        """Members run as their own uids: they must be able to reach the run directory."""
        blocked = _unreachable_ancestor(path)
        if blocked is not None:
            raise ClusterError(
                f"the mesh members ({', '.join(self.spec.mesh())}) run as their own uids and "
                f"cannot reach their data dirs under {path}: other users cannot traverse "
                f"{blocked} (mode {stat.S_IMODE(blocked.stat().st_mode):o}); use a base_dir "
                f"that every user can traverse (o+x), such as the default {default_run_base()}"
            )

    async def _start_component(self, name: str) -> None:
        """Write the component's ``files`` into its data dir, then start its process."""
        spec = self.spec.component(name)
        if spec.files is not None:
            data = self._res.data_dir(name)
            uid = self._res.uid(name)
            for rel, text in spec.files(self._res).items():
                path = Path(rel)
                if path.is_absolute() or ".." in path.parts or not path.parts:
                    raise ClusterError(
                        f"component {name!r}: file {rel!r} must be a relative path "
                        "inside its data dir"
                    )
                (data / path).parent.mkdir(parents=True, exist_ok=True)
                (data / path).write_text(text)
                if uid is not None:
                    for part in (path, *list(path.parents)[:-1]):
                        os.chown(data / part, uid, uid)
        await self._procs[name].start()

    def _make_process(
        self, c: ComponentSpec, resolver: _Resolver, libfaketime: Path | None
    ) -> ManagedProcess:
        env: dict[str, str] = dict(c.env(resolver)) if c.env else {}
        if c.fake_clock:
            assert libfaketime is not None
            clock = self.clock_file(c.name)
            clock.write_text(format_offset(0) + "\n")
            self._clock_offsets[c.name] = 0.0
            preload = " ".join(p for p in (str(libfaketime), env.get("LD_PRELOAD")) if p)
            env.update(
                LD_PRELOAD=preload,
                FAKETIME_TIMESTAMP_FILE=str(clock),
                FAKETIME_NO_CACHE="1",
                FAKETIME_DONT_FAKE_MONOTONIC="1",
            )
        return ManagedProcess(
            c.name,
            list(c.command(resolver)),
            run_dir=self.run_dir,
            env=env,
            user=resolver.uids.get(c.name),
        )

    async def stop(self) -> None:
        """Stop every process this cluster started, in reverse start order, then remove
        its iptables rules. Idempotent."""
        if not self._started:
            return
        try:
            for wave in reversed(self.spec.waves()):
                procs = [self._procs[n] for n in wave if n in self._procs]
                await asyncio.gather(
                    *(p.stop(self.spec.component(p.name).stop_timeout) for p in procs)
                )
            if self._toxiproxy is not None:
                await self._toxiproxy.aclose()
            if self._toxiproxy_proc is not None:
                await self._toxiproxy_proc.stop()
        except BaseException:
            self._kill_all_now()
            raise
        finally:
            self._started = False
            atexit.unregister(self._kill_all_now)
        self._close_network()

    def _close_network(self) -> None:
        """Remove the run's rules and free its slot (blocking, bounded; Ctrl-C ignored
        while the rules go). A rule that cannot be removed is a ClusterError (the next
        start's cleanup removes it)."""
        netfilter, self._netfilter = self._netfilter, None
        slot, self._slot = self._slot, None
        try:
            if netfilter is not None:
                netfilter.close()
        except NetfilterError as exc:
            raise ClusterError(f"could not remove this run's iptables rules: {exc}") from exc
        finally:
            if slot is not None:
                slot.release()

    def _kill_all_now(self) -> None:
        """SIGKILL every group without awaiting, then remove the rules (Ctrl-C during stop,
        atexit)."""
        procs = [p for p in [*self._procs.values(), self._toxiproxy_proc] if p is not None]
        with contextlib.suppress(Exception):
            kill_now_all(procs)
        try:
            self._close_network()
        except Exception as exc:
            log.error("%s", exc)

    async def reset(self) -> None:
        """Back to a healthy cluster between tests: no toxics, every proxy enabled, no
        iptables drop, nothing paused, every process running and ready, every clock at
        offset 0."""
        if self._netfilter is not None:
            await asyncio.to_thread(self._netfilter.clear_drops)
        await self.toxiproxy.reset()
        for name in self._clock_offsets:
            self.set_clock_offset(name, 0)
        for wave in self.spec.waves():
            for name in wave:
                proc = self._procs[name]
                if proc.alive:
                    proc.resume()
                else:
                    log.info("reset: restarting %s", name)
                    await self._start_component(name)
            await asyncio.gather(*(self.wait_ready(name) for name in wave))

    async def wait_ready(self, name: str, timeout: float | None = None) -> float:
        spec = self.spec.component(name)
        address = self.address(name)
        return await self.process(name).wait_ready(
            lambda: spec.ready(address), timeout=timeout or spec.ready_timeout
        )

    async def restart(self, name: str, *, wipe: bool = False) -> None:
        """Stop ``name`` (SIGTERM, then SIGKILL), optionally empty its data dir, start it,
        wait until it is ready."""
        proc = self.process(name)
        await proc.stop(self.spec.component(name).stop_timeout)
        if wipe:
            shutil.rmtree(self._res.data_dir(name), ignore_errors=True)
            self._res.data_dir(name)  # empty again, owned by the component's uid
        await self._start_component(name)
        await self.wait_ready(name)

    # --- what tests and chaos use -------------------------------------------------------

    @property
    def _res(self) -> _Resolver:
        if self._resolver is None:
            raise ClusterError("the cluster is not started")
        return self._resolver

    @property
    def run_dir(self) -> RunDirectory:
        if self._run_dir is None:
            raise ClusterError("the cluster is not started")
        return self._run_dir

    @property
    def toxiproxy(self) -> ToxiproxyClient:
        if self._toxiproxy is None:
            raise ClusterError("the cluster is not started")
        return self._toxiproxy

    @property
    def running(self) -> bool:
        return self._started

    @property
    def addresses(self) -> Addresses:
        return self._res

    def component_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.spec.components)

    def process(self, name: str) -> ManagedProcess:
        try:
            return self._procs[name]
        except KeyError:
            self.spec.component(name)  # raises the KeyError listing the components
            raise ClusterError(f"component {name!r} has no process yet") from None

    def processes(self) -> dict[str, ManagedProcess]:
        """Every process, including toxiproxy-server."""
        procs = dict(self._procs)
        if self._toxiproxy_proc is not None:
            procs[TOXIPROXY] = self._toxiproxy_proc
        return procs

    def address(self, name: str, which: str = MAIN) -> Address:
        """The component's own address (no proxy): its host and its port ``which``."""
        return self._res.address(name, which)

    def host(self, name: str) -> str:
        """``127.0.0.1``, or the component's own loopback host."""
        return self._res.host(name)

    def uid(self, name: str) -> int | None:
        """The uid the component runs as, when it has its own (a mesh member)."""
        return self._res.uid(name)

    def mesh(self) -> tuple[str, ...]:
        """The components at the ends of direct links, in spec order."""
        return self.spec.mesh()

    @property
    def netfilter(self) -> Netfilter:
        """The run's iptables rules (a cluster with direct links only)."""
        if self._netfilter is None:
            if not self._started:
                raise ClusterError("the cluster is not started")
            raise ClusterError(
                "this cluster has no direct links, so no iptables rules: "
                "its links are cut through Toxiproxy"
            )
        return self._netfilter

    def clock_note(self, name: str) -> str | None:
        """Why ``name``'s clock cannot be skewed, if its spec says so."""
        return self.spec.component(name).clock_note

    async def observe(self) -> Observation:
        """The cluster alone cannot observe the subject: selectors such as ``leader()``
        need a target that can (the plugin's ``chaos`` fixture provides one)."""
        raise ClusterError(
            "leader() and follower() are resolved from the subject's observations, which "
            "the cluster alone does not have: inject through the plugin's chaos fixture in "
            "a test that uses the subject, or wrap the cluster: "
            "Chaos(Observed(cluster, session.observe))"
        )

    def proxy_address(self, source: str, target: str) -> Address:
        """Where ``source`` reaches ``target``: the listen address of that link's proxy."""
        return self._res.via(source, target)

    def client_url(self, name: str, path: str = "") -> str:
        """``http://`` URL of ``name`` through the ``client -> name`` proxy."""
        return self.proxy_address(CLIENT, name).url(path=path)

    def proxy_name(self, source: str, target: str) -> str:
        for link in self.spec.links:
            if link.source == source and link.target == target:
                if link.direct:
                    raise KeyError(f"link {source} -> {target} is direct: it has no proxy")
                return link.proxy_name
        links = ", ".join(lk.proxy_name for lk in self.spec.links if not lk.direct)
        raise KeyError(f"no link {source} -> {target} (links: {links})")

    def topology(self) -> Topology:
        components = [
            Component(c.name, c.kind, process=c.name)
            for c in self.spec.components
            if not c.observer
        ]
        if any(link.source == CLIENT for link in self.spec.links):
            components.append(Component(CLIENT, ComponentKind.CLIENT))
        links = tuple(
            Link(lk.source, lk.target, None if lk.direct else lk.proxy_name)
            for lk in self.spec.links
        )
        return Topology(tuple(components), links)

    def clock_file(self, name: str) -> Path:
        if not self.spec.component(name).fake_clock:
            raise ClusterError(
                f"component {name!r} does not run under libfaketime (set fake_clock=True)"
            )
        return self.run_dir.path / f"{name}.faketime"

    def clock_offset(self, name: str) -> float:
        self.clock_file(name)
        return self._clock_offsets.get(name, 0.0)

    def set_clock_offset(self, name: str, seconds: float) -> None:
        """Shift ``name``'s wall clock by ``seconds`` from now on (it keeps running)."""
        path = self.clock_file(name)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(format_offset(seconds) + "\n")
        os.replace(tmp, path)  # atomic: the node never reads a half-written file
        self._clock_offsets[name] = float(seconds)


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
