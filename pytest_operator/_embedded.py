"""The embedded cluster backend: real processes on loopback, links through Toxiproxy or
direct (a mesh, cut with iptables).

:class:`EmbeddedCluster` gives every port a number chosen at run time, starts
``toxiproxy-server``, creates one proxy per proxied link, starts the components in
dependency order (independent ones in parallel) and waits until all are ready. Each
component is a :class:`~pytest_operator._process.ManagedProcess` (its own process group, a
pidfile); one with ``fake_clock`` runs under the host's libfaketime. The members of a mesh
get their own loopback host and uid from a machine-wide slot, and one SNAT rule each makes
their packets leave from their own host (:mod:`pytest_operator._netfilter`), so concurrent
runs never share a host or a uid.

``stop()`` stops everything in reverse order and removes the run's iptables rules, also
after a partial start, on Ctrl-C (``KeyboardInterrupt`` / ``CancelledError``) and, as a
last resort, from an ``atexit`` hook; a run killed outright is cleaned up by the next start
(processes: :class:`~pytest_operator._process.RunDirectory`; rules:
:func:`~pytest_operator._netfilter.cleanup_stale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
from pathlib import Path
from typing import ClassVar

from pytest_operator._backend import Cluster
from pytest_operator._binaries import find_libfaketime, find_toxiproxy_server
from pytest_operator._cluster import (
    HOST,
    TOXIPROXY,
    Address,
    ClusterError,
    ClusterSpec,
    ComponentSpec,
    HttpReady,
    ProxiesPending,
    Resolver,
    default_run_base,
    faketime_env,
    resolve_addresses,
)
from pytest_operator._netfilter import (
    Netfilter,
    NetfilterError,
    NetSlot,
    cleanup_stale,
    iptables_missing,
)
from pytest_operator._process import ManagedProcess, RunDirectory, kill_now_all
from pytest_operator._toxiproxy import ToxiproxyClient

log = logging.getLogger(__name__)


class EmbeddedCluster(Cluster[ManagedProcess]):
    """``async with EmbeddedCluster(spec) as cluster: ...`` (or ``start()`` / ``stop()``)."""

    backend: ClassVar[str] = "embedded"

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        base_dir: Path | str | None = None,
        toxiproxy_server: Path | str | None = None,
    ) -> None:
        super().__init__(spec, base_dir=base_dir)
        self._toxiproxy_bin = Path(toxiproxy_server) if toxiproxy_server else None
        self._slot: NetSlot | None = None

    # --- lifecycle ----------------------------------------------------------------------

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
            except ProxiesPending:
                deferred.append(name)

        await self._toxiproxy_proc.wait_ready(lambda: HttpReady("/version")(api), timeout=10)
        await self._create_proxies()
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

    def _resolve(self, run_dir: RunDirectory) -> tuple[Resolver, int]:
        """Hosts, uids and ports of every component (hosts and uids from this run's slot),
        and a port for Toxiproxy's API."""
        mesh = set(self.spec.mesh())
        hosts: dict[str, str] = {}
        uids: dict[str, int] = {}
        for number, c in enumerate(self.spec.components, start=1):
            if c.own_host or c.name in mesh:
                hosts[c.name] = self._net_slot().host(number)
            if c.name in mesh:
                uids[c.name] = self._net_slot().uid(number)
        return resolve_addresses(self.spec, run_dir.path, hosts, uids)

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

    def _make_process(
        self, c: ComponentSpec, resolver: Resolver, libfaketime: Path | None
    ) -> ManagedProcess:
        env: dict[str, str] = dict(c.env(resolver)) if c.env else {}
        if c.fake_clock:
            assert libfaketime is not None
            env = faketime_env(str(libfaketime), self._init_clock(c.name), env)
        return ManagedProcess(
            c.name,
            list(c.command(resolver)),
            run_dir=self.run_dir,
            env=env,
            user=resolver.uids.get(c.name),
        )

    async def _stop(self) -> None:
        """Every process in reverse start order, then Toxiproxy."""
        for wave in reversed(self.spec.waves()):
            procs = [self._procs[n] for n in wave if n in self._procs]
            await asyncio.gather(*(p.stop(self.spec.component(p.name).stop_timeout) for p in procs))
        if self._toxiproxy is not None:
            await self._toxiproxy.aclose()
        if self._toxiproxy_proc is not None:
            await self._toxiproxy_proc.stop()

    def _stopped(self) -> None:
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


def _unreachable_ancestor(path: Path) -> Path | None:
    """The first of ``path`` and its parents that other users cannot traverse, if any."""
    for p in (path, *path.parents):
        if not p.stat().st_mode & stat.S_IXOTH:
            return p
    return None


__all__ = ["EmbeddedCluster"]
