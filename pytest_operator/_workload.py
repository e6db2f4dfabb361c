"""The open-loop workload: requests leave on a fixed arrival schedule.

A *pattern* is a small frozen value that yields arrival offsets (seconds after
the start); a *key chooser* yields the key of each request; an *op mix* makes each
arrival a :class:`Call` (an opaque request, or for a subject with a register model a
read, a write of a unique value or a compare-and-set); targets are taken round-robin
(or at random), or for a mix that routes kinds, from the targets it names. The
:class:`Workload` launches every request as its own task at its scheduled time and
never waits for earlier answers, so a slow subject cannot slow the offered load down
(no coordinated omission). In-flight requests are capped at a high bound; past it a
request is dropped and counted, never delayed. Every request that was sent lands in
the :class:`History`.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from pytest_operator._history import History, Op, OpKind, Outcome

# ---------------------------------------------------------------- the requester


@dataclass(frozen=True, slots=True)
class Call:
    """What a client is asked to do: an op's kind, key and input values (see ``Op``)."""

    key: str
    kind: str = OpKind.REQUEST
    value: str | None = None
    expected: str | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """What a requester reports for one request.

    ``result``: the value a read returned (None: the key was absent), or the current value
    a failed compare-and-set reported (None: unknown).
    """

    outcome: Outcome
    detail: str | None = None
    result: str | None = None


class Requester(Protocol):
    """Sends one call to a target; a subject's client implements this.

    It maps the subject's answer onto an :class:`Outcome` and should not raise
    for the subject's failures (an exception is recorded as ``error``). It must
    bound its own network waits; the workload also applies a per-request timeout.
    An answer that leaves unknown whether a write took effect (a timeout, a reply
    that says the request may still commit) is ``timeout``: indeterminate.
    """

    async def __call__(self, target: str, call: Call) -> Response: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------- patterns


class Pattern(Protocol):
    """An arrival schedule: offsets in seconds from the start, ascending."""

    def offsets(self, start: float) -> Iterator[float]:
        """Offsets after ``start`` (epoch seconds; patterns aligned to the clock use it)."""
        ...


def _check_rate(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite rate >= 0 requests/s, got {value!r}")


def _check_duration(name: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")


def _piecewise(segments: Sequence[tuple[float, float | None, float]]) -> Iterator[float]:
    """Evenly spaced arrivals in each (start, end, rate) segment; end None is open."""
    for begin, end, rate in segments:
        if rate <= 0:
            continue
        for k in itertools.count():
            t = begin + k / rate
            if end is not None and t >= end:
                break
            yield t


@dataclass(frozen=True, slots=True)
class Steady:
    """``rate`` requests/s, evenly spaced, for ``duration`` seconds (None: until stopped)."""

    rate: float
    duration: float | None = None

    def __post_init__(self) -> None:
        _check_rate("steady rate", self.rate)
        _check_duration("steady duration", self.duration)

    def offsets(self, start: float) -> Iterator[float]:
        return _piecewise([(0.0, self.duration, self.rate)])


@dataclass(frozen=True, slots=True)
class Ramp:
    """The rate moves linearly from ``start_rate`` to ``end_rate`` over ``duration`` seconds.

    The k-th arrival is where the expected count, the integral of the rate,
    reaches k; the total is about ``(start_rate + end_rate) / 2 * duration``.
    """

    start_rate: float
    end_rate: float
    duration: float

    def __post_init__(self) -> None:
        _check_rate("ramp start_rate", self.start_rate)
        _check_rate("ramp end_rate", self.end_rate)
        _check_duration("ramp duration", self.duration)

    def offsets(self, start: float) -> Iterator[float]:
        r0, slope = self.start_rate, (self.end_rate - self.start_rate) / self.duration
        for k in itertools.count():
            if slope == 0:
                if r0 == 0:
                    return
                t = k / r0
            else:
                disc = r0 * r0 + 2 * slope * k
                if disc < 0:  # a falling ramp that has run out of arrivals
                    return
                t = (math.sqrt(disc) - r0) / slope
            if t >= self.duration:
                return
            yield t


@dataclass(frozen=True, slots=True)
class Burst:
    """``base_rate``, then ``burst_rate`` for ``length`` seconds from ``at``, then ``base_rate``.

    ``duration`` bounds the whole pattern (None: base rate until stopped).
    """

    base_rate: float
    burst_rate: float
    at: float
    length: float
    duration: float | None = None

    def __post_init__(self) -> None:
        _check_rate("burst base_rate", self.base_rate)
        _check_rate("burst burst_rate", self.burst_rate)
        if not (self.at >= 0 and math.isfinite(self.at)):
            raise ValueError(f"burst at must be >= 0 seconds, got {self.at!r}")
        _check_duration("burst length", self.length)
        _check_duration("burst duration", self.duration)

    def offsets(self, start: float) -> Iterator[float]:
        end = self.at + self.length
        segments = [
            (0.0, self.at, self.base_rate),
            (self.at, end, self.burst_rate),
            (end, self.duration, self.base_rate),
        ]
        for t in _piecewise(segments):
            if self.duration is not None and t >= self.duration:
                return
            yield t


@dataclass(frozen=True, slots=True)
class BoundaryBurst:
    """A burst timed just before and just after window edges of the epoch clock.

    Edges are where a fixed-window limiter turns over its windows:
    ``floor(now_ms / window_ms) * window_ms``. For each of ``edges`` consecutive
    edges (the first at least ``lead_ms`` after the start), ``count // 2``
    requests are spread evenly over the ``spread_ms`` before the edge and the
    rest over the ``spread_ms`` from the edge on. ``base_rate`` adds steady
    background traffic over the same span.
    """

    window_ms: int
    count: int
    spread_ms: float
    edges: int = 1
    base_rate: float = 0.0
    lead_ms: float = 50.0

    def __post_init__(self) -> None:
        if self.window_ms <= 0:
            raise ValueError(f"boundary_burst window_ms must be > 0, got {self.window_ms!r}")
        if self.count < 2:
            raise ValueError(f"boundary_burst count must be >= 2, got {self.count!r}")
        if not (0 < self.spread_ms <= self.window_ms / 2):
            raise ValueError(
                f"boundary_burst spread_ms must be in (0, window_ms / 2], got {self.spread_ms!r}"
            )
        if self.edges < 1:
            raise ValueError(f"boundary_burst edges must be >= 1, got {self.edges!r}")
        _check_rate("boundary_burst base_rate", self.base_rate)
        if self.lead_ms < 0:
            raise ValueError(f"boundary_burst lead_ms must be >= 0, got {self.lead_ms!r}")

    def edge_times(self, start: float) -> tuple[float, ...]:
        """The window edges (epoch seconds) this pattern bursts around, for a given start."""
        earliest_ms = start * 1000.0 + self.lead_ms + self.spread_ms
        first = math.ceil(earliest_ms / self.window_ms) * self.window_ms
        return tuple((first + i * self.window_ms) / 1000.0 for i in range(self.edges))

    def offsets(self, start: float) -> Iterator[float]:
        spread = self.spread_ms / 1000.0
        before = self.count // 2
        after = self.count - before
        burst: list[float] = []
        for edge in self.edge_times(start):
            at = edge - start
            burst.extend(at - spread + i * spread / before for i in range(before))
            burst.extend(at + i * spread / after for i in range(after))
        end = burst[-1] + spread / after
        background = list(_piecewise([(0.0, end, self.base_rate)]))
        return iter(sorted(burst + background))


def steady(rate: float, duration: float | None = None) -> Steady:
    return Steady(rate, duration)


def ramp(start_rate: float, end_rate: float, duration: float) -> Ramp:
    return Ramp(start_rate, end_rate, duration)


def burst(
    base_rate: float, burst_rate: float, at: float, length: float, duration: float | None = None
) -> Burst:
    return Burst(base_rate, burst_rate, at, length, duration)


def boundary_burst(
    window_ms: int,
    count: int,
    spread_ms: float,
    *,
    edges: int = 1,
    base_rate: float = 0.0,
    lead_ms: float = 50.0,
) -> BoundaryBurst:
    return BoundaryBurst(window_ms, count, spread_ms, edges, base_rate, lead_ms)


# ---------------------------------------------------------------- keys


class KeyChooser(Protocol):
    """Makes a fresh, seeded stream of keys (the same seed gives the same keys)."""

    def stream(self) -> Iterator[str]: ...


@dataclass(frozen=True, slots=True)
class Hot:
    """Every request on one key."""

    key: str

    def stream(self) -> Iterator[str]:
        return itertools.repeat(self.key)


@dataclass(frozen=True, slots=True)
class Uniform:
    """Keys drawn uniformly at random from a fixed set."""

    keys: tuple[str, ...]
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("uniform needs at least one key")

    def stream(self) -> Iterator[str]:
        rng = random.Random(self.seed)
        keys = self.keys
        while True:
            yield keys[rng.randrange(len(keys))]


@dataclass(frozen=True, slots=True)
class Zipf:
    """Keys ``{prefix}0 .. {prefix}{n-1}``, key i drawn with weight ``1 / (i + 1) ** s``."""

    n: int
    s: float = 1.1
    seed: int = 0
    prefix: str = "key-"
    _cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"zipf n must be >= 1, got {self.n!r}")
        if not (self.s > 0 and math.isfinite(self.s)):
            raise ValueError(f"zipf s must be > 0, got {self.s!r}")
        weights = itertools.accumulate(1.0 / (i + 1) ** self.s for i in range(self.n))
        object.__setattr__(self, "_cumulative", tuple(weights))

    def stream(self) -> Iterator[str]:
        rng = random.Random(self.seed)
        cumulative, total = self._cumulative, self._cumulative[-1]
        keys = [f"{self.prefix}{i}" for i in range(self.n)]
        last = self.n - 1
        while True:
            yield keys[min(bisect.bisect_right(cumulative, rng.random() * total), last)]


def hot(key: str = "hot") -> Hot:
    return Hot(key)


def uniform(keys: Sequence[str] | int, *, seed: int = 0, prefix: str = "key-") -> Uniform:
    """Uniform over the given keys, or over ``n`` keys ``{prefix}0 ..`` when given a count."""
    if isinstance(keys, int):
        if keys < 1:
            raise ValueError(f"uniform needs n >= 1 keys, got {keys!r}")
        return Uniform(tuple(f"{prefix}{i}" for i in range(keys)), seed)
    if isinstance(keys, str):
        raise TypeError("uniform takes a sequence of keys or a count; for one key use hot(key)")
    return Uniform(tuple(keys), seed)


def zipf(n: int, s: float = 1.1, *, seed: int = 0, prefix: str = "key-") -> Zipf:
    return Zipf(n, s, seed, prefix)


# ---------------------------------------------------------------- op mixes


class OpMix(Protocol):
    """Makes each arrival a call: a fresh, seeded stream (the same seed, the same calls)."""

    def calls(self, keys: Iterator[str]) -> Iterator[Call]:
        """One call per key drawn from ``keys``."""
        ...

    def route(self, kind: str) -> tuple[str, ...] | None:
        """The targets calls of this kind go to (None: every target of the workload)."""
        ...


@dataclass(frozen=True, slots=True)
class Requests:
    """Every arrival an opaque request on its key (a rate limiter's check)."""

    def calls(self, keys: Iterator[str]) -> Iterator[Call]:
        return (Call(key) for key in keys)

    def route(self, kind: str) -> tuple[str, ...] | None:
        return None


@dataclass(frozen=True, slots=True)
class RegisterOps:
    """Reads, writes and compare-and-sets in the given proportions (Jepsen's register).

    Every write and CAS writes a value unique in this stream (``"1"``, ``"2"``, ...), so a
    value seen tells which op wrote it; a CAS expects the last value this stream asked to
    write to its key (None, absent, before any). ``reads_on`` / ``writes_on`` send reads /
    writes and CAS only to those targets (Jepsen's clients bound to nodes).
    """

    read: float = 0.5
    write: float = 0.3
    cas: float = 0.2
    seed: int = 0
    reads_on: tuple[str, ...] | None = None
    writes_on: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("read", "write", "cas"):
            weight = getattr(self, name)
            if not (weight >= 0 and math.isfinite(weight)):
                raise ValueError(
                    f"register_ops {name} must be a finite weight >= 0, got {weight!r}"
                )
        if self.read + self.write + self.cas <= 0:
            raise ValueError("register_ops needs a positive weight for read, write or cas")
        for name in ("reads_on", "writes_on"):
            targets = getattr(self, name)
            if targets is not None and (not targets or isinstance(targets, str)):
                raise ValueError(f"register_ops {name} must be a non-empty list of targets")

    def calls(self, keys: Iterator[str]) -> Iterator[Call]:
        rng = random.Random(self.seed)
        written: dict[str, str] = {}
        values = itertools.count(1)
        kinds = (OpKind.READ, OpKind.WRITE, OpKind.CAS)
        weights = (self.read, self.write, self.cas)
        for key in keys:
            kind = rng.choices(kinds, weights)[0]
            if kind is OpKind.READ:
                yield Call(key, OpKind.READ)
                continue
            value = str(next(values))
            yield Call(key, kind, value, written.get(key) if kind is OpKind.CAS else None)
            written[key] = value

    def route(self, kind: str) -> tuple[str, ...] | None:
        return self.reads_on if kind == OpKind.READ else self.writes_on


def requests() -> Requests:
    return Requests()


def register_ops(
    read: float = 0.5,
    write: float = 0.3,
    cas: float = 0.2,
    *,
    seed: int = 0,
    reads_on: Sequence[str] | None = None,
    writes_on: Sequence[str] | None = None,
) -> RegisterOps:
    return RegisterOps(
        read,
        write,
        cas,
        seed,
        None if reads_on is None else _names("reads_on", reads_on),
        None if writes_on is None else _names("writes_on", writes_on),
    )


def _names(what: str, targets: Sequence[str]) -> tuple[str, ...]:
    if isinstance(targets, str):
        raise TypeError(f"register_ops {what} takes a list of targets, got the string {targets!r}")
    return tuple(targets)


# ---------------------------------------------------------------- the workload


@dataclass(frozen=True, slots=True)
class LatenessStats:
    """How late requests left against their schedule, seconds; and what was dropped."""

    sent: int
    dropped: int
    p50: float
    p99: float
    max: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of an ascending sequence; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Workload:
    """Drives an open-loop pattern at targets through a requester into a history.

    ``timeout`` bounds each request (then it is recorded as ``timeout``);
    ``max_in_flight`` caps concurrent requests, and ``max_lag`` how far behind
    its schedule an arrival may still be sent (seconds): past either, arrivals
    are dropped and counted in :attr:`dropped`, so an overloaded generator
    sheds load visibly instead of spiralling. ``choice`` is ``"round_robin"``
    or ``"random"`` (seeded by ``seed``). ``ops`` is the default op mix
    (:func:`requests` when None); ``start`` may pass another.
    """

    def __init__(
        self,
        requester: Requester,
        targets: Sequence[str],
        history: History | None = None,
        *,
        timeout: float = 2.0,
        max_in_flight: int = 10_000,
        max_lag: float = 1.0,
        choice: str = "round_robin",
        seed: int = 0,
        ops: OpMix | None = None,
    ) -> None:
        if not targets or isinstance(targets, str):
            raise ValueError(f"a workload needs a non-empty sequence of targets, got {targets!r}")
        if choice not in ("round_robin", "random"):
            raise ValueError(f"choice must be 'round_robin' or 'random', got {choice!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        if not max_lag > 0:
            raise ValueError(f"max_lag must be > 0 seconds, got {max_lag!r}")
        self.requester = requester
        self.targets = tuple(targets)
        self.history = history if history is not None else History()
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_lag = max_lag
        self.choice = choice
        self.seed = seed
        self.ops: OpMix = ops if ops is not None else Requests()
        self.dropped = 0
        self._lateness: list[float] = []
        self._driver: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._index = itertools.count()

    @property
    def running(self) -> bool:
        return self._driver is not None and not self._driver.done()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def start(
        self,
        pattern: Pattern,
        keys: KeyChooser | Sequence[str] | str = "hot",
        *,
        duration: float | None = None,
        ops: OpMix | None = None,
    ) -> None:
        """Start sending in a background task and return at once.

        ``keys`` is a key chooser, one key, or a list of keys (chosen uniformly);
        ``duration`` cuts the pattern off after that many seconds; ``ops`` makes each
        arrival a call (None: the workload's default mix).
        """
        if self._driver is not None:
            raise RuntimeError("the workload is already started; stop() it first")
        _check_duration("workload duration", duration)
        chooser = _as_chooser(keys)
        mix = ops if ops is not None else self.ops
        router = _Router(self.targets, mix, self.choice, self.seed)
        self._driver = asyncio.create_task(
            self._drive(pattern, chooser, mix, router, duration), name="workload-driver"
        )

    async def wait(self) -> None:
        """Wait until the pattern has run out (forever for an open-ended one)."""
        if self._driver is not None:
            await asyncio.shield(self._driver)

    async def stop(self, *, drain: bool = True) -> None:
        """Stop sending; with ``drain``, wait (at most the timeout) for in-flight requests.

        Requests still in flight after that are cancelled and recorded as
        ``timeout`` with detail ``"cancelled at stop"``. An error raised by the
        schedule itself (a broken pattern) is raised here.
        """
        driver, self._driver = self._driver, None
        failure: BaseException | None = None
        if driver is not None:
            if not driver.done():
                driver.cancel()
            try:
                await driver
            except asyncio.CancelledError:
                if not driver.cancelled():
                    raise  # the caller of stop() was cancelled
            except Exception as exc:
                failure = exc
        if drain and self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=self.timeout + 0.5)
        pending = set(self._in_flight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if failure is not None:
            raise failure

    async def run(
        self,
        pattern: Pattern,
        keys: KeyChooser | Sequence[str] | str = "hot",
        duration: float | None = None,
        *,
        ops: OpMix | None = None,
    ) -> History:
        """Run a pattern to its end (or for ``duration`` seconds), drain, return the history."""
        if duration is None and _open_ended(pattern):
            raise ValueError("an open-ended pattern needs a duration to run()")
        await self.start(pattern, keys, duration=duration, ops=ops)
        try:
            await self.wait()
        finally:
            await self.stop()
        return self.history

    async def aclose(self) -> None:
        """Stop (draining) and close the requester."""
        try:
            await self.stop()
        finally:
            await self.requester.aclose()

    async def __aenter__(self) -> Workload:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def lateness(self) -> LatenessStats:
        """Send lateness against the schedule, over every request sent so far."""
        values = sorted(self._lateness)
        return LatenessStats(
            sent=len(values),
            dropped=self.dropped,
            p50=percentile(values, 50),
            p99=percentile(values, 99),
            max=values[-1] if values else 0.0,
        )

    # -- internals

    async def _drive(
        self,
        pattern: Pattern,
        keys: KeyChooser,
        mix: OpMix,
        router: _Router,
        duration: float | None,
    ) -> None:
        clock = self.history.clock
        loop = asyncio.get_running_loop()
        start_mono = time.monotonic()
        start_epoch = clock.to_epoch(start_mono)
        calls = mix.calls(keys.stream())
        launched_without_yield = 0
        for offset in pattern.offsets(start_epoch):
            if duration is not None and offset >= duration:
                break
            due = start_mono + offset
            delay = due - time.monotonic()
            if delay > 0:
                launched_without_yield = 0
                await asyncio.sleep(delay)
            elif launched_without_yield >= 64:  # behind schedule: let the sends run
                launched_without_yield = 0
                await asyncio.sleep(0)
            launched_without_yield += 1
            call = next(calls)
            target = router.target(call.kind)
            if len(self._in_flight) >= self.max_in_flight or -delay > self.max_lag:
                self.dropped += 1
                continue
            task = loop.create_task(self._one(next(self._index), target, call, clock.to_epoch(due)))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _one(self, index: int, target: str, call: Call, scheduled: float) -> None:
        clock = self.history.clock
        send = clock.now()
        self._lateness.append(send - scheduled)

        def op(
            recv: float | None,
            outcome: Outcome,
            detail: str | None,
            gave_up: float | None = None,
            result: str | None = None,
        ) -> Op:
            return Op(
                index,
                target,
                call.key,
                scheduled,
                send,
                recv,
                outcome,
                detail,
                gave_up,
                call.kind,
                call.value,
                call.expected,
                result,
            )

        self.history.invoked(op(None, Outcome.TIMEOUT, "in flight"))
        recv: float | None
        gave_up: float | None = None
        result: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.requester(target, call)
            recv = clock.now()
            outcome, detail, result = response.outcome, response.detail, response.result
        except TimeoutError:
            recv, outcome, detail = None, Outcome.TIMEOUT, f"no answer within {self.timeout} s"
        except asyncio.CancelledError:
            self.history.append(
                op(None, Outcome.TIMEOUT, "cancelled at stop", gave_up=clock.now() - send)
            )
            raise
        except Exception as exc:
            recv, outcome, detail = clock.now(), Outcome.ERROR, f"requester raised {exc!r}"
        if outcome is Outcome.TIMEOUT:
            # However the timeout was noticed (here, or by the requester's own clock), the
            # client waited until now and never learnt the outcome: no receive time.
            gave_up = (recv if recv is not None else clock.now()) - send
            recv, result = None, None
        self.history.append(op(recv, outcome, detail, gave_up, result))


class _Router:
    """Picks each call's target: round robin (or seeded random) over the workload's
    targets, or over the targets the op mix routes the call's kind to."""

    def __init__(self, targets: tuple[str, ...], mix: OpMix, choice: str, seed: int) -> None:
        self._targets = targets
        self._mix = mix
        self._choice = choice
        self._rng = random.Random(seed)
        self._streams: dict[tuple[str, ...], Iterator[str]] = {}
        for kind in OpKind:
            routed = mix.route(kind)
            if routed is not None:
                unknown = sorted(set(routed) - set(targets))
                if unknown:
                    raise ValueError(
                        f"the op mix routes {kind} calls to unknown target(s)"
                        f" {', '.join(unknown)}; targets: {', '.join(targets)}"
                    )

    def target(self, kind: str) -> str:
        pool = self._mix.route(kind) or self._targets
        stream = self._streams.get(pool)
        if stream is None:
            if self._choice == "random":
                rng = self._rng
                stream = (pool[rng.randrange(len(pool))] for _ in itertools.count())
            else:
                stream = itertools.cycle(pool)
            self._streams[pool] = stream
        return next(stream)


def _as_chooser(keys: KeyChooser | Sequence[str] | str) -> KeyChooser:
    if isinstance(keys, str):
        return Hot(keys)
    if isinstance(keys, Sequence):
        return uniform(keys)
    return keys


def _open_ended(pattern: Pattern) -> bool:
    if isinstance(pattern, Steady):
        return pattern.duration is None and pattern.rate > 0
    if isinstance(pattern, Burst):
        return pattern.duration is None and pattern.base_rate > 0
    return not isinstance(pattern, Ramp | BoundaryBurst)
