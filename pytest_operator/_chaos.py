"""Faults (nemeses): declarative values that inject on enter and heal on exit.

A fault is built before any cluster exists, so it can sit in a marker
(``@pytest.mark.chaos(partition("node-2", "redis"))``); ``fault.inject(target)`` is an
async context manager that injects into a running cluster and heals in a ``finally``,
whatever the body does, yielding an :class:`Injection` that records when. Every fault
carries its ground truth, ``root_cause``: what a diagnosis should name.

Healing is idempotent and never silent: a heal that fails raises :class:`HealError` when
the body succeeded; when the body raised, the body's exception propagates with a note
naming the failed heal (and the failure is logged), so the heal never masks it.

Link faults act on the Toxiproxy proxy of the link ``a -> b`` (or ``b -> a`` when only
that one exists): ``partition`` disables it (connections refused and reset), ``blackhole``
swallows data both ways (``timeout`` toxic, timeout 0), ``latency``/``bandwidth`` slow
what ``b`` sends back to ``a``, ``reset_peer`` resets connections both ways.

A mesh (members on direct links, each on its own loopback host: see ``_cluster``) is cut
with iptables DROP rules between hosts instead (``_netfilter``): ``partition(a, b)`` drops
a -> b and b -> a (only a -> b with ``one_way=True``), ``isolate(c)`` cuts c from every
peer both ways, ``split(*groups)`` drops every packet between groups (a member named in no
group keeps every link), and ``split_minority()`` / ``split_no_quorum()`` build the groups
at injection from the members' roles and the mesh. Each injection tags its rules, so its
heal removes exactly the rules it added (a reset removes every drop). The monitor reaches
members from 127.0.0.1, which no rule names: an isolated member still answers it.

Faults are bound before they are injected: ``fault.bind(target)`` returns the concrete
fault, with selectors (``leader()``, ``follower(i)``) resolved from the subject's
observation, and the :class:`Injection` records that bound fault, so its ``root_causes``
name real components. A fault that cannot run on a component raises
:class:`ChaosUnsupported` (clock skew on a component whose spec has a ``clock_note``).

A misconfiguration is a change the subject knows how to make and undo: ``misconfigure``
takes the change and its revert, each a catalogue action with its arguments (run
directly, not through the operator's runner: the chaos layer is not the operator) or an
async callable. Its root cause is a misconfiguration reached by the clients' traffic
(the ``client`` pseudo-component, where the causal engine locates traffic-borne causes).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self

from pytest_operator._actions import Action
from pytest_operator._causes import FaultKind, RootCause, split_cause
from pytest_operator._process import ProcessHandle
from pytest_operator._selectors import (
    SELECT_TIMEOUT_S,
    Selector,
    Who,
    follower,
    leader,
    minority_groups,
    name_of,
    no_quorum_groups,
    resolve,
)
from pytest_operator._toxiproxy import Stream, ToxicType, ToxiproxyClient, ToxiproxyError

if TYPE_CHECKING:
    from pytest_operator._netfilter import Netfilter
    from pytest_operator._signals import Observation
    from pytest_operator._topology import Topology

log = logging.getLogger(__name__)

_TOXIC_PREFIX = "chaos"
_tokens = itertools.count(1)  # tags the rules of one injection of a network fault


class ChaosTarget(Protocol):
    """What a fault needs from a running cluster, whichever backend runs it (every
    ``_backend.Cluster`` satisfies it; so does :class:`Observed`, which adds the subject's
    observation for selectors). A process fault acts through ``process(name)``: a process
    group on the embedded backend, a container on the compose backend."""

    @property
    def toxiproxy(self) -> ToxiproxyClient: ...
    @property
    def netfilter(self) -> Netfilter: ...
    def proxy_name(self, source: str, target: str) -> str: ...
    def process(self, name: str) -> ProcessHandle: ...
    def set_clock_offset(self, name: str, seconds: float) -> None: ...
    def clock_file(self, name: str) -> Path: ...
    def clock_note(self, name: str) -> str | None: ...
    def topology(self) -> Topology: ...
    def mesh(self) -> tuple[str, ...]: ...
    def host(self, name: str) -> str: ...
    async def observe(self) -> Observation: ...
    async def restart(self, name: str, *, wipe: bool = False) -> None: ...
    async def wait_ready(self, name: str, timeout: float | None = None) -> float: ...


class Observed:
    """A chaos target that observes the subject: ``Observed(cluster, session.observe)``.

    The plugin's ``chaos`` fixture wraps the cluster so, in a test that uses the subject,
    selectors such as ``leader()`` resolve from the subject session's observation.
    Without ``observe`` it defers to the cluster's own (which explains what is missing).
    """

    def __init__(
        self, target: ChaosTarget, observe: Callable[[], Awaitable[Observation]] | None
    ) -> None:
        self.target = target
        self._observe = observe

    def __repr__(self) -> str:
        return f"Observed({self.target!r})"

    async def observe(self) -> Observation:
        if self._observe is None:
            return await self.target.observe()
        return await self._observe()

    @property
    def toxiproxy(self) -> ToxiproxyClient:
        return self.target.toxiproxy

    @property
    def netfilter(self) -> Netfilter:
        return self.target.netfilter

    def proxy_name(self, source: str, target: str) -> str:
        return self.target.proxy_name(source, target)

    def process(self, name: str) -> ProcessHandle:
        return self.target.process(name)

    def set_clock_offset(self, name: str, seconds: float) -> None:
        self.target.set_clock_offset(name, seconds)

    def clock_file(self, name: str) -> Path:
        return self.target.clock_file(name)

    def clock_note(self, name: str) -> str | None:
        return self.target.clock_note(name)

    def topology(self) -> Topology:
        return self.target.topology()

    def mesh(self) -> tuple[str, ...]:
        return self.target.mesh()

    def host(self, name: str) -> str:
        return self.target.host(name)

    async def restart(self, name: str, *, wipe: bool = False) -> None:
        await self.target.restart(name, wipe=wipe)

    async def wait_ready(self, name: str, timeout: float | None = None) -> float:
        return await self.target.wait_ready(name, timeout)


class HealError(RuntimeError):
    """A fault could not be healed: the cluster may be left damaged."""


class ChaosUnsupported(RuntimeError):
    """This fault cannot be injected into this component or link (the message says why)."""


@dataclass(slots=True)
class Injection:
    """When a fault was injected and healed: wall clock (epoch s) and monotonic."""

    fault: Fault
    injected_at: float = 0.0
    injected_mono: float = 0.0
    healed_at: float | None = None
    healed_mono: float | None = None
    heal_error: BaseException | None = None
    left_in_place: bool = False
    """Left for the operator to fix (``chaos.leave``): healed only at the test's teardown."""

    @property
    def root_cause(self) -> RootCause | None:
        return self.fault.root_cause

    @property
    def active(self) -> bool:
        return self.injected_mono > 0 and self.healed_mono is None

    @property
    def duration(self) -> float | None:
        if self.healed_mono is None:
            return None
        return self.healed_mono - self.injected_mono


class Fault(abc.ABC):
    """A fault; subclasses are frozen dataclasses implementing ``_apply`` and ``_heal``."""

    @property
    @abc.abstractmethod
    def root_causes(self) -> tuple[RootCause, ...]: ...

    @property
    def root_cause(self) -> RootCause | None:
        """The single root cause this fault should be diagnosed as (None for a composition
        of several: see ``root_causes``)."""
        causes = self.root_causes
        return causes[0] if len(causes) == 1 else None

    @abc.abstractmethod
    def describe(self) -> str: ...

    def __str__(self) -> str:
        return self.describe()

    async def bind(self, target: ChaosTarget) -> Fault:
        """The concrete fault to inject into ``target``: selectors resolved, what cannot
        run refused (:class:`ChaosUnsupported`). The default is the fault itself."""
        return self

    @abc.abstractmethod
    async def _apply(self, target: ChaosTarget) -> None: ...

    @abc.abstractmethod
    async def _heal(self, target: ChaosTarget) -> None:
        """Undo the fault; must be idempotent and safe after a partial ``_apply``."""

    @contextlib.asynccontextmanager
    async def inject(self, target: ChaosTarget) -> AsyncIterator[Injection]:
        """Bind, inject on enter, heal on exit whatever happens (also after a partial
        inject). The injection records the bound fault."""
        bound = await self.bind(target)
        injection = Injection(bound, injected_at=time.time(), injected_mono=time.monotonic())
        try:
            await bound._apply(target)
            log.info("injected %s", bound.describe())
            yield injection
        except BaseException as exc:
            failure = await bound._heal_recording(target, injection)
            if failure is not None:
                # Never mask the body's exception, never pass silently either.
                log.error("%s", failure)
                exc.add_note(failure)
            raise
        else:
            failure = await bound._heal_recording(target, injection)
            if failure is not None:
                raise HealError(failure) from injection.heal_error

    async def _heal_recording(self, target: ChaosTarget, injection: Injection) -> str | None:
        """Heal; return a message when healing failed (the error is kept on the injection)."""
        try:
            await self._heal(target)
        except Exception as exc:
            injection.heal_error = exc
            return f"healing {self.describe()} failed: {exc}"
        finally:
            injection.healed_at = time.time()
            injection.healed_mono = time.monotonic()
        log.info("healed %s", self.describe())
        return None


# --- link faults ------------------------------------------------------------------------


def _is_direct(target: ChaosTarget, a: str, b: str) -> bool:
    """Whether a direct link (no proxy) joins ``a`` and ``b``, either way."""
    return any(
        lk.proxy is None and {lk.source, lk.target} == {a, b} for lk in target.topology().links
    )


def _resolve_proxy(target: ChaosTarget, a: str, b: str) -> str:
    if _is_direct(target, a, b):
        raise ChaosUnsupported(
            f"the link between {a} and {b} is direct (no Toxiproxy proxy): it can be cut "
            "(partition, isolate, split) but not slowed or reset"
        )
    try:
        return target.proxy_name(a, b)
    except KeyError:
        pass
    try:
        return target.proxy_name(b, a)
    except KeyError as exc:
        raise KeyError(f"no link between {a} and {b}: {exc.args[0]}") from None


async def _remove_toxics(target: ChaosTarget, proxy: str, names: Sequence[str]) -> None:
    for name in names:
        try:
            await target.toxiproxy.remove_toxic(proxy, name)
        except ToxiproxyError as exc:
            if exc.status != 404:  # already gone: healing is idempotent
                raise


@dataclass(frozen=True, slots=True)
class _LinkFault(Fault):
    a: str
    b: str

    def _toxic_name(self, stream: Stream) -> str:
        return f"{_TOXIC_PREFIX}-{type(self).__name__.lower()}-{stream}"


async def _in_thread(work: Callable[[], None]) -> None:
    """Run blocking iptables calls in a thread, so the monitor keeps ticking meanwhile. When
    cancelled (Ctrl-C), wait for the thread first: the heal that follows must not race a
    half-done injection (the wait is bounded: every iptables call has a timeout)."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what propagates
        raise


async def _drop(target: ChaosTarget, pairs: Iterable[tuple[str, str]], tag: str) -> None:
    """DROP packets from each pair's first component to its second (their hosts)."""
    hosts = [(target.host(a), target.host(b)) for a, b in pairs]
    netfilter = target.netfilter

    def add() -> None:
        for a, b in hosts:
            netfilter.drop(a, b, tag)

    await _in_thread(add)


async def _undrop(target: ChaosTarget, pairs: Iterable[tuple[str, str]], tag: str) -> None:
    """Remove exactly the rules ``_drop(pairs, tag)`` added (idempotent)."""
    hosts = [(target.host(a), target.host(b)) for a, b in pairs]
    netfilter = target.netfilter

    def remove() -> None:
        for a, b in hosts:
            netfilter.undrop(a, b, tag)

    await _in_thread(remove)


def _both_ways(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [p for a, b in pairs for p in ((a, b), (b, a))]


def _check_mesh(target: ChaosTarget, names: Iterable[str], fault: str) -> None:
    mesh = target.mesh()
    for name in names:
        if name not in mesh:
            members = ", ".join(mesh) or "none: this cluster has no direct links"
            raise ChaosUnsupported(f"{fault}: {name} is not a mesh member (members: {members})")


@dataclass(frozen=True, slots=True)
class Partition(Fault):
    """``a`` and ``b`` cannot reach each other. On a Toxiproxy link the proxy is disabled
    (new connections refused, open ones closed). On a direct link, packets from ``a`` to
    ``b`` are dropped, and from ``b`` to ``a`` unless ``one_way``."""

    a: Who
    b: Who
    one_way: bool = False
    token: int = field(default=0, compare=False, repr=False)

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.PARTITION, str(self.a), str(self.b)),)

    def describe(self) -> str:
        way = ", one way" if self.one_way else ""
        return f"partition({self.a} -> {self.b}{way})"

    async def bind(self, target: ChaosTarget) -> Partition:
        a, b = await resolve(self.a, target), await resolve(self.b, target)
        if a == b:
            raise ValueError(f"{self.describe()}: {a} cannot be partitioned from itself")
        if not _is_direct(target, a, b):
            _resolve_proxy(target, a, b)  # a KeyError naming the links when there is none
            if self.one_way:
                raise ChaosUnsupported(
                    f"{self.describe()}: a one-way cut needs a direct link; {a} and {b} are "
                    "joined through Toxiproxy, whose partition cuts both ways"
                )
        return dataclasses.replace(self, a=a, b=b, token=next(_tokens))

    def _pairs(self) -> list[tuple[str, str]]:
        a, b = name_of(self.a), name_of(self.b)
        return [(a, b)] if self.one_way else [(a, b), (b, a)]

    async def _apply(self, target: ChaosTarget) -> None:
        a, b = name_of(self.a), name_of(self.b)
        if _is_direct(target, a, b):
            await _drop(target, self._pairs(), f"partition-{self.token}")
        else:
            await target.toxiproxy.disable(_resolve_proxy(target, a, b))

    async def _heal(self, target: ChaosTarget) -> None:
        a, b = name_of(self.a), name_of(self.b)
        if _is_direct(target, a, b):
            await _undrop(target, self._pairs(), f"partition-{self.token}")
        else:
            await target.toxiproxy.enable(_resolve_proxy(target, a, b))


@dataclass(frozen=True, slots=True)
class Isolate(Fault):
    """``component`` is cut from every mesh peer (its direct links), both ways; it still
    runs and answers the monitor."""

    component: Who
    token: int = field(default=0, compare=False, repr=False)

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.ISOLATION, str(self.component)),)

    def describe(self) -> str:
        return f"isolate({self.component})"

    async def bind(self, target: ChaosTarget) -> Isolate:
        name = await resolve(self.component, target)
        _check_mesh(target, [name], f"isolate({name})")
        return dataclasses.replace(self, component=name, token=next(_tokens))

    def _pairs(self, target: ChaosTarget) -> list[tuple[str, str]]:
        name = name_of(self.component)
        return _both_ways((name, peer) for peer in target.topology().peers(name))

    async def _apply(self, target: ChaosTarget) -> None:
        await _drop(target, self._pairs(target), f"isolate-{self.token}")

    async def _heal(self, target: ChaosTarget) -> None:
        await _undrop(target, self._pairs(target), f"isolate-{self.token}")


@dataclass(frozen=True, slots=True)
class Split(Fault):
    """The mesh split into ``groups``: every packet between two groups is dropped, both
    ways (a member in no group keeps all its links). ``order`` (the spec order, set when
    bound) makes the root cause canonical."""

    groups: tuple[tuple[str, ...], ...]
    order: tuple[str, ...] = field(default=(), compare=False)
    token: int = field(default=0, compare=False, repr=False)

    def __post_init__(self) -> None:
        split_cause(self.groups)  # a ValueError for fewer than two groups, overlaps...

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (split_cause(self.groups, self.order),)

    def describe(self) -> str:
        return "split(" + " | ".join("+".join(g) for g in self.groups) + ")"

    async def bind(self, target: ChaosTarget) -> Split:
        _check_mesh(target, [m for g in self.groups for m in g], self.describe())
        return dataclasses.replace(self, order=target.mesh(), token=next(_tokens))

    def _pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for i, group in enumerate(self.groups):
            for other in self.groups[i + 1 :]:
                pairs += _both_ways((a, b) for a in group for b in other)
        return pairs

    async def _apply(self, target: ChaosTarget) -> None:
        await _drop(target, self._pairs(), f"split-{self.token}")

    async def _heal(self, target: ChaosTarget) -> None:
        await _undrop(target, self._pairs(), f"split-{self.token}")


@dataclass(frozen=True, slots=True)
class GroupBuilder(Fault):
    """A split whose groups are chosen at injection; binds to a concrete :class:`Split`."""

    timeout: float = SELECT_TIMEOUT_S

    async def _apply(self, target: ChaosTarget) -> None:
        raise TypeError(f"{self.describe()} is injected through Fault.inject, which binds it")

    async def _heal(self, target: ChaosTarget) -> None:
        return None  # never applied itself: its bound Split is what gets healed


@dataclass(frozen=True, slots=True)
class SplitMinority(GroupBuilder):
    """A minority of followers (``(n - 1) // 2``, at least one) cut from the rest, the
    leader staying in the majority; with three members, one follower's isolation."""

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.SPLIT, "minority()"),)

    def describe(self) -> str:
        return "split_minority()"

    async def bind(self, target: ChaosTarget) -> Split:
        minority, majority = await minority_groups(target, self.timeout)
        return await Split((minority, majority)).bind(target)


@dataclass(frozen=True, slots=True)
class SplitNoQuorum(GroupBuilder):
    """Groups none of which holds a majority (3 -> 1|1|1, 5 -> 2|2|1): nobody can commit."""

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.SPLIT, "no_quorum()"),)

    def describe(self) -> str:
        return "split_no_quorum()"

    async def bind(self, target: ChaosTarget) -> Split:
        return await Split(no_quorum_groups(target.mesh())).bind(target)


@dataclass(frozen=True, slots=True)
class _ToxicFault(_LinkFault):
    """A link fault realised by one toxic per stream."""

    @abc.abstractmethod
    def _toxic(self) -> tuple[ToxicType, dict[str, int], tuple[Stream, ...]]:
        """The toxic's type, attributes, and the streams it goes on."""

    async def _apply(self, target: ChaosTarget) -> None:
        proxy = _resolve_proxy(target, self.a, self.b)
        kind, attributes, streams = self._toxic()
        for stream in streams:
            await target.toxiproxy.add_toxic(
                proxy, kind, attributes, name=self._toxic_name(stream), stream=stream
            )

    async def _heal(self, target: ChaosTarget) -> None:
        proxy = _resolve_proxy(target, self.a, self.b)
        _, _, streams = self._toxic()
        await _remove_toxics(target, proxy, [self._toxic_name(s) for s in streams])


_BOTH = (Stream.UPSTREAM, Stream.DOWNSTREAM)


@dataclass(frozen=True, slots=True)
class Blackhole(_ToxicFault):
    """Data is swallowed both ways and connections stay open (``timeout`` toxic, 0)."""

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.PARTITION, self.a, self.b),)

    def describe(self) -> str:
        return f"blackhole({self.a} -> {self.b})"

    def _toxic(self) -> tuple[ToxicType, dict[str, int], tuple[Stream, ...]]:
        return ToxicType.TIMEOUT, {"timeout": 0}, _BOTH


@dataclass(frozen=True, slots=True)
class ResetPeer(_ToxicFault):
    """Connections are reset (TCP RST) both ways after ``timeout_ms``."""

    timeout_ms: int = 0

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.PARTITION, self.a, self.b),)

    def describe(self) -> str:
        return f"reset_peer({self.a} -> {self.b})"

    def _toxic(self) -> tuple[ToxicType, dict[str, int], tuple[Stream, ...]]:
        return ToxicType.RESET_PEER, {"timeout": self.timeout_ms}, _BOTH


@dataclass(frozen=True, slots=True)
class Latency(_ToxicFault):
    """``b``'s answers to ``a`` are delayed by ``ms`` +/- ``jitter_ms``."""

    ms: int = 0
    jitter_ms: int = 0

    def __post_init__(self) -> None:
        if self.ms <= 0 or self.jitter_ms < 0:
            raise ValueError(
                f"latency needs ms > 0 and jitter_ms >= 0, got ms={self.ms}, "
                f"jitter_ms={self.jitter_ms}"
            )

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.LATENCY, self.a, self.b),)

    def describe(self) -> str:
        jitter = f" +/- {self.jitter_ms}" if self.jitter_ms else ""
        return f"latency({self.a} -> {self.b}, {self.ms}{jitter} ms)"

    def _toxic(self) -> tuple[ToxicType, dict[str, int], tuple[Stream, ...]]:
        attributes = {"latency": self.ms, "jitter": self.jitter_ms}
        return ToxicType.LATENCY, attributes, (Stream.DOWNSTREAM,)


@dataclass(frozen=True, slots=True)
class Bandwidth(_ToxicFault):
    """``b``'s answers to ``a`` are limited to ``kbps`` kilobytes per second (Toxiproxy's
    ``rate``)."""

    kbps: int = 0

    def __post_init__(self) -> None:
        if self.kbps < 0:
            raise ValueError(f"bandwidth needs kbps >= 0, got {self.kbps}")

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.BANDWIDTH, self.a, self.b),)

    def describe(self) -> str:
        return f"bandwidth({self.a} -> {self.b}, {self.kbps} KB/s)"

    def _toxic(self) -> tuple[ToxicType, dict[str, int], tuple[Stream, ...]]:
        return ToxicType.BANDWIDTH, {"rate": self.kbps}, (Stream.DOWNSTREAM,)


# --- process faults ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kill(Fault):
    """SIGKILL the component's process group; healed by starting it again."""

    component: Who

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.CRASH, str(self.component)),)

    def describe(self) -> str:
        return f"kill({self.component})"

    async def bind(self, target: ChaosTarget) -> Self:
        return dataclasses.replace(self, component=await resolve(self.component, target))

    async def _apply(self, target: ChaosTarget) -> None:
        await target.process(name_of(self.component)).kill()

    async def _heal(self, target: ChaosTarget) -> None:
        name = name_of(self.component)
        proc = target.process(name)
        if not proc.alive:
            await proc.start()
        proc.resume()
        await target.wait_ready(name)


@dataclass(frozen=True, slots=True)
class Pause(Fault):
    """SIGSTOP the component's process group; healed by SIGCONT."""

    component: Who

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.PAUSE, str(self.component)),)

    def describe(self) -> str:
        return f"pause({self.component})"

    async def bind(self, target: ChaosTarget) -> Self:
        return dataclasses.replace(self, component=await resolve(self.component, target))

    async def _apply(self, target: ChaosTarget) -> None:
        target.process(name_of(self.component)).pause()

    async def _heal(self, target: ChaosTarget) -> None:
        target.process(name_of(self.component)).resume()


@dataclass(frozen=True, slots=True)
class RestartWithDataLoss(Fault):
    """Stop the component, empty its data directory, start it again (on enter)."""

    component: Who

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.DATA_LOSS, str(self.component)),)

    def describe(self) -> str:
        return f"restart_with_data_loss({self.component})"

    async def bind(self, target: ChaosTarget) -> Self:
        return dataclasses.replace(self, component=await resolve(self.component, target))

    async def _apply(self, target: ChaosTarget) -> None:
        await target.restart(name_of(self.component), wipe=True)

    async def _heal(self, target: ChaosTarget) -> None:
        # The data is gone for good; healing makes sure the component runs again.
        name = name_of(self.component)
        proc = target.process(name)
        if not proc.alive:
            await proc.start()
            await target.wait_ready(name)


@dataclass(frozen=True, slots=True)
class ClockSkew(Fault):
    """Shift the component's wall clock by ``seconds`` (libfaketime); monotonic time is
    untouched. Healed by an offset of 0."""

    component: str
    seconds: float

    def __post_init__(self) -> None:
        if self.seconds == 0:
            raise ValueError("clock_skew needs a non-zero offset in seconds")

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.CLOCK_SKEW, self.component),)

    def describe(self) -> str:
        return f"clock_skew({self.component}, {self.seconds:+g} s)"

    async def bind(self, target: ChaosTarget) -> ClockSkew:
        note = target.clock_note(self.component)
        if note is not None:
            raise ChaosUnsupported(note)
        return self

    async def _apply(self, target: ChaosTarget) -> None:
        target.set_clock_offset(self.component, self.seconds)

    async def _heal(self, target: ChaosTarget) -> None:
        target.set_clock_offset(self.component, 0)


# --- configuration faults ---------------------------------------------------------------

MISCONFIGURED_AT = "client"
"""Where a misconfiguration is located: the clients' pseudo-component (``_cluster.CLIENT``),
as the causal engine names a cause that the traffic meets on every service."""

Change = Callable[[], Awaitable[object]] | tuple[Action, Mapping[str, object]]
"""A configuration change: an async callable, or a catalogue action and its arguments."""


async def _run_change(change: Change) -> None:
    if isinstance(change, tuple):
        action, args = change
        await action.run(action.validate(args))  # an ActionError names a bad argument
    else:
        await change()


def _describe_change(change: Change) -> str:
    if isinstance(change, tuple):
        action, args = change
        return f"{action.name}({', '.join(f'{k}={v}' for k, v in args.items())})"
    return getattr(change, "__name__", "change")


@dataclass(frozen=True, slots=True)
class Misconfigure(Fault):
    """A configuration change that stays until someone fixes it: ``change`` applies it on
    enter, ``revert`` undoes it on heal (so it must be safe to run after the operator
    fixed it already, and after a partial change: an idempotent revert, such as writing
    the declared configuration again)."""

    change: Change = field(compare=False)
    revert: Change = field(compare=False)
    what: str = ""
    component: str = MISCONFIGURED_AT

    def __post_init__(self) -> None:
        for role, step in (("change", self.change), ("revert", self.revert)):
            if isinstance(step, tuple):
                if len(step) != 2 or not isinstance(step[0], Action):
                    raise TypeError(f"misconfigure {role}: (action, args) or an async callable")
                step[0].validate(step[1])  # refused now, not at injection
            elif not callable(step):
                raise TypeError(f"misconfigure {role}: (action, args) or an async callable")

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.MISCONFIGURATION, self.component),)

    def describe(self) -> str:
        return f"misconfigure({self.what or _describe_change(self.change)})"

    async def _apply(self, target: ChaosTarget) -> None:
        await _run_change(self.change)

    async def _heal(self, target: ChaosTarget) -> None:
        await _run_change(self.revert)


# --- composition ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Compose(Fault):
    """Several faults at once: injected in order, healed in reverse order."""

    faults: tuple[Fault, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.faults) < 2:
            raise ValueError("compose needs at least two faults")

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return tuple(c for f in self.faults for c in f.root_causes)

    def describe(self) -> str:
        return "compose(" + ", ".join(f.describe() for f in self.faults) + ")"

    async def bind(self, target: ChaosTarget) -> Compose:
        return Compose(tuple([await f.bind(target) for f in self.faults]))

    async def _apply(self, target: ChaosTarget) -> None:
        applied: list[Fault] = []
        try:
            for fault in self.faults:
                applied.append(fault)
                await fault._apply(target)
        except BaseException:
            for fault in reversed(applied):
                with contextlib.suppress(Exception):
                    await fault._heal(target)
            raise

    async def _heal(self, target: ChaosTarget) -> None:
        errors: list[str] = []
        for fault in reversed(self.faults):
            try:
                await fault._heal(target)
            except Exception as exc:
                errors.append(f"{fault.describe()}: {exc}")
        if errors:
            raise HealError("; ".join(errors))


# --- constructors -----------------------------------------------------------------------


def partition(a: Who, b: Who, *, one_way: bool = False) -> Partition:
    """Cut ``a`` from ``b``: through Toxiproxy on a proxied link; on a direct link with
    iptables, both ways unless ``one_way`` (then only packets from a to b)."""
    return Partition(a, b, one_way)


def isolate(component: Who) -> Isolate:
    """Cut ``component`` from every mesh peer, both ways."""
    return Isolate(component)


def split(*groups: Sequence[str] | GroupBuilder) -> Split | GroupBuilder:
    """Split the mesh into ``groups`` (two or more sequences of member names), or into the
    groups a builder chooses at injection: ``split(split_minority())``."""
    if len(groups) == 1 and isinstance(groups[0], GroupBuilder):
        return groups[0]
    if any(isinstance(g, GroupBuilder) for g in groups):
        raise ValueError("split takes either groups of names or one group builder")
    if any(isinstance(g, str) for g in groups):
        raise ValueError(f"split takes groups (sequences of names), got {list(groups)}")
    return Split(tuple(tuple(g) for g in groups if not isinstance(g, GroupBuilder)))


def split_minority(*, timeout: float = SELECT_TIMEOUT_S) -> SplitMinority:
    """A minority of followers cut from the leader's majority, chosen at injection."""
    return SplitMinority(timeout)


def split_no_quorum() -> SplitNoQuorum:
    """The mesh cut into groups none of which holds a majority."""
    return SplitNoQuorum()


def blackhole(a: str, b: str) -> Blackhole:
    return Blackhole(a, b)


def latency(a: str, b: str, ms: int, jitter_ms: int = 0) -> Latency:
    return Latency(a, b, ms=ms, jitter_ms=jitter_ms)


def bandwidth(a: str, b: str, kbps: int) -> Bandwidth:
    return Bandwidth(a, b, kbps=kbps)


def reset_peer(a: str, b: str, timeout_ms: int = 0) -> ResetPeer:
    return ResetPeer(a, b, timeout_ms=timeout_ms)


def kill(component: Who) -> Kill:
    return Kill(component)


def pause(component: Who) -> Pause:
    return Pause(component)


def restart_with_data_loss(component: Who) -> RestartWithDataLoss:
    return RestartWithDataLoss(component)


def clock_skew(component: str, seconds: float) -> ClockSkew:
    return ClockSkew(component, seconds)


def compose(*faults: Fault) -> Compose:
    return Compose(tuple(faults))


def misconfigure(
    change: Change, *, revert: Change, what: str = "", component: str = MISCONFIGURED_AT
) -> Misconfigure:
    """A configuration change left until fixed: ``change`` and ``revert`` are each a
    catalogue action with its arguments, ``(action, {"key": "k1", ...})``, or an async
    callable; ``what`` describes it in reports (default: the change's action and
    arguments). Healed by ``revert`` (which must be idempotent)."""
    return Misconfigure(change, revert, what, component)


LEAVABLE: tuple[type[Fault], ...] = ()  # set below: the process faults


def check_leavable(fault: Fault) -> None:
    """Only a process fault (kill, pause, data loss) or a misconfiguration can be left for
    the operator to fix: the catalogues remedy components and configurations, not links.
    A ChaosUnsupported otherwise."""
    if not isinstance(fault, LEAVABLE):
        raise ChaosUnsupported(
            f"{fault.describe()} cannot be left in place for the operator: only kill, pause,"
            " restart_with_data_loss and misconfigure can (inject the others with `async with`)"
        )


class Chaos:
    """The imperative facade: ``async with Chaos(cluster).partition("node-2", "redis"): ...``."""

    def __init__(self, target: ChaosTarget) -> None:
        self.target = target

    def inject(self, fault: Fault) -> contextlib.AbstractAsyncContextManager[Injection]:
        return fault.inject(self.target)

    def partition(
        self, a: Who, b: Who, *, one_way: bool = False
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(partition(a, b, one_way=one_way))

    def isolate(self, component: Who) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(isolate(component))

    def split(
        self, *groups: Sequence[str] | GroupBuilder
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(split(*groups))

    def split_minority(
        self, *, timeout: float = SELECT_TIMEOUT_S
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(split_minority(timeout=timeout))

    def split_no_quorum(self) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(split_no_quorum())

    def blackhole(self, a: str, b: str) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(blackhole(a, b))

    def latency(
        self, a: str, b: str, ms: int, jitter_ms: int = 0
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(latency(a, b, ms, jitter_ms))

    def bandwidth(
        self, a: str, b: str, kbps: int
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(bandwidth(a, b, kbps))

    def reset_peer(
        self, a: str, b: str, timeout_ms: int = 0
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(reset_peer(a, b, timeout_ms))

    def kill(self, component: Who) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(kill(component))

    def pause(self, component: Who) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(pause(component))

    def restart_with_data_loss(
        self, component: Who
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(restart_with_data_loss(component))

    def clock_skew(
        self, component: str, seconds: float
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(clock_skew(component, seconds))

    def compose(self, *faults: Fault) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(compose(*faults))

    def misconfigure(
        self, change: Change, *, revert: Change, what: str = ""
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(misconfigure(change, revert=revert, what=what))


LEAVABLE = (Kill, Pause, RestartWithDataLoss, Misconfigure)

__all__ = [
    "Chaos",
    "ChaosTarget",
    "ChaosUnsupported",
    "Fault",
    "GroupBuilder",
    "HealError",
    "Injection",
    "Isolate",
    "Misconfigure",
    "Observed",
    "Partition",
    "Selector",
    "Split",
    "SplitMinority",
    "SplitNoQuorum",
    "bandwidth",
    "blackhole",
    "clock_skew",
    "compose",
    "follower",
    "isolate",
    "kill",
    "latency",
    "leader",
    "misconfigure",
    "partition",
    "pause",
    "reset_peer",
    "restart_with_data_loss",
    "split",
    "split_minority",
    "split_no_quorum",
]
