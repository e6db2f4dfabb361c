"""The embedded cluster backend: real processes on loopback, every link through Toxiproxy.

A subject describes its cluster declaratively (:class:`ClusterSpec`): components (a
command line built from the run's :class:`Addresses`, an environment, a readiness check,
whether it runs under libfaketime, what it starts after) and links (``source -> target``,
where ``source`` may be the pseudo-component ``"client"``: the harness and the monitor).
:class:`EmbeddedCluster` gives every component a port chosen at run time, starts
``toxiproxy-server``, creates one proxy per link (so any single link can be cut while the
others stay healthy), starts the components in dependency order (independent ones in
parallel) and waits until all are ready. ``stop()`` stops everything in reverse order,
also after a partial start, on Ctrl-C (``KeyboardInterrupt`` / ``CancelledError``) and,
as a last resort, from an ``atexit`` hook; a run killed outright is cleaned up by the next
start (see :class:`~pytest_operator._process.RunDirectory`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from pytest_operator._binaries import find_libfaketime, find_toxiproxy_server
from pytest_operator._process import (
    ManagedProcess,
    ProcessError,
    RunDirectory,
    free_ports,
    kill_now_all,
)
from pytest_operator._topology import Component, ComponentKind, Link, Topology
from pytest_operator._toxiproxy import ProxySpec, ToxiproxyClient

log = logging.getLogger(__name__)

CLIENT = "client"  # the pseudo-component for the harness and the monitor
TOXIPROXY = "toxiproxy"  # the process name of toxiproxy-server (never a component)
HOST = "127.0.0.1"
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
    """What a component's command line and environment may refer to."""

    def port(self, name: str) -> int: ...
    def address(self, name: str) -> Address: ...
    def via(self, source: str, target: str) -> Address: ...
    def data_dir(self, name: str) -> Path: ...


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """One process of the subject.

    ``command`` and ``env`` are called with the run's :class:`Addresses` once the ports
    and proxies exist. ``data_dir`` (``addresses.data_dir(name)``) is emptied by a restart
    with data loss. ``files`` (relative path -> text) are written into the data dir before
    every start, so a generated config file is there again after a wipe. ``fake_clock`` runs
    it under libfaketime with an offset that can change while it runs. An ``observer``
    (a metrics scraper, say) is started, reset and stopped with the cluster but is not part
    of the system under test: it has no links and :meth:`EmbeddedCluster.topology` leaves it
    out, so no diagnosis can blame it.
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


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """``source`` calls ``target`` through a Toxiproxy proxy named ``source->target``."""

    source: str
    target: str

    @property
    def proxy_name(self) -> str:
        return f"{self.source}->{self.target}"


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
        seen: set[tuple[str, str]] = set()
        observers = {c.name for c in self.components if c.observer}
        for link in self.links:
            for end in (link.source, link.target):
                if end in observers:
                    raise ClusterError(
                        f"link {link.proxy_name}: {end!r} is an observer, not part of the "
                        "system under test, and has no links"
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
    ports: Mapping[str, int]
    proxies: dict[tuple[str, str], int]  # filled once toxiproxy has created them
    data_root: Path

    def port(self, name: str) -> int:
        try:
            return self.ports[name]
        except KeyError:
            raise KeyError(f"no component {name!r} (components: {', '.join(self.ports)})") from None

    def address(self, name: str) -> Address:
        return Address(HOST, self.port(name))

    def via(self, source: str, target: str) -> Address:
        if not self.proxies:
            raise _ProxiesPending
        try:
            return Address(HOST, self.proxies[(source, target)])
        except KeyError:
            links = ", ".join(f"{s}->{t}" for s, t in self.proxies)
            raise KeyError(f"no link {source} -> {target} (links: {links})") from None

    def data_dir(self, name: str) -> Path:
        self.port(name)
        path = self.data_root / f"{name}.data"
        path.mkdir(parents=True, exist_ok=True)
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
        self._run_dir = run_dir = RunDirectory.create(self.base_dir)
        names = self.spec.component_names()
        *component_ports, api_port = free_ports(len(names) + 1)
        ports = dict(zip(names, component_ports, strict=True))
        self._resolver = resolver = _Resolver(ports, {}, run_dir.path)

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
        created = await self._toxiproxy.populate(
            [
                ProxySpec(lk.proxy_name, f"{HOST}:0", str(resolver.address(lk.target)))
                for lk in self.spec.links
            ]
        )
        by_name = {p.name: p.listen_port for p in created}
        resolver.proxies.update(
            {(lk.source, lk.target): by_name[lk.proxy_name] for lk in self.spec.links}
        )
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

    async def _start_component(self, name: str) -> None:
        """Write the component's ``files`` into its data dir, then start its process."""
        spec = self.spec.component(name)
        if spec.files is not None:
            data = self._res.data_dir(name)
            for rel, text in spec.files(self._res).items():
                path = Path(rel)
                if path.is_absolute() or ".." in path.parts or not path.parts:
                    raise ClusterError(
                        f"component {name!r}: file {rel!r} must be a relative path "
                        "inside its data dir"
                    )
                (data / path).parent.mkdir(parents=True, exist_ok=True)
                (data / path).write_text(text)
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
        return ManagedProcess(c.name, list(c.command(resolver)), run_dir=self.run_dir, env=env)

    async def stop(self) -> None:
        """Stop every process this cluster started, in reverse start order. Idempotent."""
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

    def _kill_all_now(self) -> None:
        """SIGKILL every group without awaiting (Ctrl-C during stop, atexit)."""
        procs = [p for p in [*self._procs.values(), self._toxiproxy_proc] if p is not None]
        with contextlib.suppress(Exception):
            kill_now_all(procs)

    async def reset(self) -> None:
        """Back to a healthy cluster between tests: no toxics, every proxy enabled, nothing
        paused, every process running and ready, every clock at offset 0."""
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
            data = self._res.data_dir(name)
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(parents=True, exist_ok=True)
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

    def address(self, name: str) -> Address:
        """The component's own address (no proxy)."""
        return self._res.address(name)

    def proxy_address(self, source: str, target: str) -> Address:
        """Where ``source`` reaches ``target``: the listen address of that link's proxy."""
        return self._res.via(source, target)

    def client_url(self, name: str, path: str = "") -> str:
        """``http://`` URL of ``name`` through the ``client -> name`` proxy."""
        return self.proxy_address(CLIENT, name).url(path=path)

    def proxy_name(self, source: str, target: str) -> str:
        for link in self.spec.links:
            if link.source == source and link.target == target:
                return link.proxy_name
        links = ", ".join(lk.proxy_name for lk in self.spec.links)
        raise KeyError(f"no link {source} -> {target} (links: {links})")

    def topology(self) -> Topology:
        components = [
            Component(c.name, c.kind, process=c.name)
            for c in self.spec.components
            if not c.observer
        ]
        if any(link.source == CLIENT for link in self.spec.links):
            components.append(Component(CLIENT, ComponentKind.CLIENT))
        links = tuple(Link(lk.source, lk.target, lk.proxy_name) for lk in self.spec.links)
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
]
