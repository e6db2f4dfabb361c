"""Cluster backends: what every backend does the same way, and what each must provide.

A backend runs a :class:`~pytest_operator._cluster.ClusterSpec`: the embedded one as
processes on this machine (:mod:`pytest_operator._embedded`), the compose one as
containers of a Docker engine (:mod:`pytest_operator._compose`). :class:`Cluster` is the
base of both. It owns what does not depend on where a component runs: the run directory
and the run's addresses (one :class:`~pytest_operator._cluster.Resolver` for all
backends), the Toxiproxy client, the files written into data dirs, the libfaketime clock
files, readiness, restarts, the reset between scenarios, and the view that subjects
(``ClusterView``) and chaos (``ChaosTarget``) see. A backend provides:

- ``_start()``: bring the spec up: Toxiproxy and its proxies, then the components wave by
  wave (``spec.waves()``), each wave ready before the next, and fill ``_procs``;
- ``_stop()``: stop everything it started, in reverse order (``stop()`` calls it, and the
  last-resort kill if it is interrupted);
- ``_kill_all_now()``: that last resort (synchronous, bounded, Ctrl-C proof), also
  registered with ``atexit`` while the cluster runs;
- a :class:`~pytest_operator._process.ProcessHandle` per component (``process(name)``):
  start, stop, kill, pause, resume, readiness. Chaos acts through it.

A third backend (Kubernetes, say) is one more subclass in a module of its own.
"""

from __future__ import annotations

import abc
import asyncio
import atexit
import logging
import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Generic, Self, TypeVar

from pytest_operator._cluster import (
    CLIENT,
    HOST,
    MAIN,
    TOXIPROXY,
    Address,
    Addresses,
    ClusterError,
    ClusterSpec,
    Resolver,
    default_run_base,
    format_offset,
)
from pytest_operator._process import ProcessHandle, RunDirectory
from pytest_operator._topology import Component, ComponentKind, Link, Topology
from pytest_operator._toxiproxy import ProxySpec

if TYPE_CHECKING:
    from pytest_operator._netfilter import Netfilter
    from pytest_operator._signals import Observation
    from pytest_operator._toxiproxy import ToxiproxyClient

log = logging.getLogger(__name__)

P = TypeVar("P", bound=ProcessHandle, covariant=True)


class Cluster(abc.ABC, Generic[P]):
    """``async with SomeCluster(spec) as cluster: ...`` (or ``start()`` / ``stop()``)."""

    backend: ClassVar[str]
    """The backend's name, as ``--cluster`` spells it."""

    def __init__(self, spec: ClusterSpec, *, base_dir: Path | str | None = None) -> None:
        self.spec = spec
        self.base_dir = Path(base_dir) if base_dir is not None else default_run_base()
        self._run_dir: RunDirectory | None = None
        self._resolver: Resolver | None = None
        self._toxiproxy: ToxiproxyClient | None = None
        self._toxiproxy_proc: P | None = None
        self._procs: dict[str, P] = {}
        self._clock_offsets: dict[str, float] = {}
        self._netfilter: Netfilter | None = None
        self._started = False
        self.ready_seconds: float | None = None  # start() to all ready, last start

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        names = ", ".join(c.name for c in self.spec.components)
        return f"{type(self).__name__}({names}; {state})"

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
        """Start every component and wait until all are ready. On any failure (Ctrl-C
        included) whatever was started is stopped before the error propagates."""
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

    @abc.abstractmethod
    async def _start(self) -> None: ...

    async def stop(self) -> None:
        """Stop everything this cluster started, in reverse start order. Idempotent; when
        interrupted (Ctrl-C), the last-resort kill finishes the job."""
        if not self._started:
            return
        try:
            await self._stop()
        except BaseException:
            self._kill_all_now()
            raise
        finally:
            self._started = False
            atexit.unregister(self._kill_all_now)
        self._stopped()

    @abc.abstractmethod
    async def _stop(self) -> None: ...

    def _stopped(self) -> None:
        """After a clean stop: release what the run held besides its components."""

    @abc.abstractmethod
    def _kill_all_now(self) -> None:
        """Kill every component now, without awaiting (Ctrl-C during stop, atexit)."""

    async def reset(self) -> None:
        """Back to a healthy cluster between tests: no toxics, every proxy enabled, no
        iptables drop, nothing paused, every component running and ready, every clock at
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

    async def _create_proxies(self) -> None:
        """One Toxiproxy proxy per proxied link, then the resolver knows every ``via``.
        Proxies listen on port 0: Toxiproxy binds them and reports the real port, so no
        other process can take a proxy's port between choosing and binding it."""
        resolver = self._res
        proxied = [lk for lk in self.spec.links if not lk.direct]
        if not proxied:
            return
        created = await self.toxiproxy.populate(
            [
                ProxySpec(lk.proxy_name, f"{HOST}:0", str(resolver.address(lk.target)))
                for lk in proxied
            ]
        )
        by_name = {p.name: p.listen_port for p in created}
        resolver.proxies.update({(lk.source, lk.target): by_name[lk.proxy_name] for lk in proxied})

    def _write_files(self, name: str) -> None:
        """Write the component's ``files`` into its data dir (before every start, so a
        generated config is there again after a wipe)."""
        spec = self.spec.component(name)
        if spec.files is None:
            return
        data = self._res.data_dir(name)
        uid = self._res.uid(name)
        for rel, text in spec.files(self._res).items():
            path = Path(rel)
            if path.is_absolute() or ".." in path.parts or not path.parts:
                raise ClusterError(
                    f"component {name!r}: file {rel!r} must be a relative path inside its data dir"
                )
            (data / path).parent.mkdir(parents=True, exist_ok=True)
            (data / path).write_text(text)
            if uid is not None:
                for part in (path, *list(path.parents)[:-1]):
                    os.chown(data / part, uid, uid)

    async def _start_component(self, name: str) -> None:
        """Write the component's ``files`` into its data dir, then start it."""
        self._write_files(name)
        await self._procs[name].start()

    # --- what tests and chaos use -------------------------------------------------------

    @property
    def _res(self) -> Resolver:
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

    def process(self, name: str) -> P:
        try:
            return self._procs[name]
        except KeyError:
            self.spec.component(name)  # raises the KeyError listing the components
            raise ClusterError(f"component {name!r} has no process yet") from None

    def processes(self) -> dict[str, P]:
        """Every component's process, and Toxiproxy's."""
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

    # --- clocks -------------------------------------------------------------------------

    def _clock_path(self, name: str) -> Path:
        """Where ``name``'s libfaketime offset file lives (a backend may move it)."""
        return self.run_dir.path / f"{name}.faketime"

    def clock_file(self, name: str) -> Path:
        if not self.spec.component(name).fake_clock:
            raise ClusterError(
                f"component {name!r} does not run under libfaketime (set fake_clock=True)"
            )
        return self._clock_path(name)

    def _init_clock(self, name: str) -> Path:
        """Create ``name``'s clock file at offset 0; its path."""
        clock = self.clock_file(name)
        clock.parent.mkdir(parents=True, exist_ok=True)
        clock.write_text(format_offset(0) + "\n")
        self._clock_offsets[name] = 0.0
        return clock

    def clock_offset(self, name: str) -> float:
        self.clock_file(name)
        return self._clock_offsets.get(name, 0.0)

    def set_clock_offset(self, name: str, seconds: float) -> None:
        """Shift ``name``'s wall clock by ``seconds`` from now on (it keeps running)."""
        path = self.clock_file(name)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(format_offset(seconds) + "\n")
        os.replace(tmp, path)  # atomic: the component never reads a half-written file
        self._clock_offsets[name] = float(seconds)


__all__ = ["Cluster"]
