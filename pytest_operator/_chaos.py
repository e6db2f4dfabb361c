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
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._process import ManagedProcess
from pytest_operator._toxiproxy import Stream, ToxicType, ToxiproxyClient, ToxiproxyError

log = logging.getLogger(__name__)

_TOXIC_PREFIX = "chaos"


class ChaosTarget(Protocol):
    """What a fault needs from a running cluster (EmbeddedCluster satisfies it)."""

    @property
    def toxiproxy(self) -> ToxiproxyClient: ...
    def proxy_name(self, source: str, target: str) -> str: ...
    def process(self, name: str) -> ManagedProcess: ...
    def set_clock_offset(self, name: str, seconds: float) -> None: ...
    def clock_file(self, name: str) -> Path: ...
    async def restart(self, name: str, *, wipe: bool = False) -> None: ...
    async def wait_ready(self, name: str, timeout: float | None = None) -> float: ...


class HealError(RuntimeError):
    """A fault could not be healed: the cluster may be left damaged."""


@dataclass(slots=True)
class Injection:
    """When a fault was injected and healed: wall clock (epoch s) and monotonic."""

    fault: Fault
    injected_at: float = 0.0
    injected_mono: float = 0.0
    healed_at: float | None = None
    healed_mono: float | None = None
    heal_error: BaseException | None = None

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

    @abc.abstractmethod
    async def _apply(self, target: ChaosTarget) -> None: ...

    @abc.abstractmethod
    async def _heal(self, target: ChaosTarget) -> None:
        """Undo the fault; must be idempotent and safe after a partial ``_apply``."""

    @contextlib.asynccontextmanager
    async def inject(self, target: ChaosTarget) -> AsyncIterator[Injection]:
        """Inject on enter, heal on exit whatever happens (also after a partial inject)."""
        injection = Injection(self, injected_at=time.time(), injected_mono=time.monotonic())
        try:
            await self._apply(target)
            log.info("injected %s", self.describe())
            yield injection
        except BaseException as exc:
            failure = await self._heal_recording(target, injection)
            if failure is not None:
                # Never mask the body's exception, never pass silently either.
                log.error("%s", failure)
                exc.add_note(failure)
            raise
        else:
            failure = await self._heal_recording(target, injection)
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


def _resolve_proxy(target: ChaosTarget, a: str, b: str) -> str:
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


@dataclass(frozen=True, slots=True)
class Partition(_LinkFault):
    """The link's proxy is disabled: new connections refused, open ones closed."""

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.PARTITION, self.a, self.b),)

    def describe(self) -> str:
        return f"partition({self.a} -> {self.b})"

    async def _apply(self, target: ChaosTarget) -> None:
        await target.toxiproxy.disable(_resolve_proxy(target, self.a, self.b))

    async def _heal(self, target: ChaosTarget) -> None:
        await target.toxiproxy.enable(_resolve_proxy(target, self.a, self.b))


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

    component: str

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.CRASH, self.component),)

    def describe(self) -> str:
        return f"kill({self.component})"

    async def _apply(self, target: ChaosTarget) -> None:
        await target.process(self.component).kill()

    async def _heal(self, target: ChaosTarget) -> None:
        proc = target.process(self.component)
        if not proc.alive:
            await proc.start()
        proc.resume()
        await target.wait_ready(self.component)


@dataclass(frozen=True, slots=True)
class Pause(Fault):
    """SIGSTOP the component's process group; healed by SIGCONT."""

    component: str

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.PAUSE, self.component),)

    def describe(self) -> str:
        return f"pause({self.component})"

    async def _apply(self, target: ChaosTarget) -> None:
        target.process(self.component).pause()

    async def _heal(self, target: ChaosTarget) -> None:
        target.process(self.component).resume()


@dataclass(frozen=True, slots=True)
class RestartWithDataLoss(Fault):
    """Stop the component, empty its data directory, start it again (on enter)."""

    component: str

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.DATA_LOSS, self.component),)

    def describe(self) -> str:
        return f"restart_with_data_loss({self.component})"

    async def _apply(self, target: ChaosTarget) -> None:
        await target.restart(self.component, wipe=True)

    async def _heal(self, target: ChaosTarget) -> None:
        # The data is gone for good; healing makes sure the component runs again.
        proc = target.process(self.component)
        if not proc.alive:
            await proc.start()
            await target.wait_ready(self.component)


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

    async def _apply(self, target: ChaosTarget) -> None:
        target.set_clock_offset(self.component, self.seconds)

    async def _heal(self, target: ChaosTarget) -> None:
        target.set_clock_offset(self.component, 0)


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


def partition(a: str, b: str) -> Partition:
    return Partition(a, b)


def blackhole(a: str, b: str) -> Blackhole:
    return Blackhole(a, b)


def latency(a: str, b: str, ms: int, jitter_ms: int = 0) -> Latency:
    return Latency(a, b, ms=ms, jitter_ms=jitter_ms)


def bandwidth(a: str, b: str, kbps: int) -> Bandwidth:
    return Bandwidth(a, b, kbps=kbps)


def reset_peer(a: str, b: str, timeout_ms: int = 0) -> ResetPeer:
    return ResetPeer(a, b, timeout_ms=timeout_ms)


def kill(component: str) -> Kill:
    return Kill(component)


def pause(component: str) -> Pause:
    return Pause(component)


def restart_with_data_loss(component: str) -> RestartWithDataLoss:
    return RestartWithDataLoss(component)


def clock_skew(component: str, seconds: float) -> ClockSkew:
    return ClockSkew(component, seconds)


def compose(*faults: Fault) -> Compose:
    return Compose(tuple(faults))


class Chaos:
    """The imperative facade: ``async with Chaos(cluster).partition("node-2", "redis"): ...``."""

    def __init__(self, target: ChaosTarget) -> None:
        self.target = target

    def inject(self, fault: Fault) -> contextlib.AbstractAsyncContextManager[Injection]:
        return fault.inject(self.target)

    def partition(self, a: str, b: str) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(partition(a, b))

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

    def kill(self, component: str) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(kill(component))

    def pause(self, component: str) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(pause(component))

    def restart_with_data_loss(
        self, component: str
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(restart_with_data_loss(component))

    def clock_skew(
        self, component: str, seconds: float
    ) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(clock_skew(component, seconds))

    def compose(self, *faults: Fault) -> contextlib.AbstractAsyncContextManager[Injection]:
        return self.inject(compose(*faults))
