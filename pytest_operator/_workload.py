"""The open-loop workload: requests leave on a fixed arrival schedule.

A *pattern* is a small frozen value that yields arrival offsets (seconds after
the start); a *key chooser* yields the key of each request; targets are taken
round-robin (or at random). The :class:`Workload` launches every request as its
own task at its scheduled time and never waits for earlier answers, so a slow
subject cannot slow the offered load down (no coordinated omission). In-flight
requests are capped at a high bound; past it a request is dropped and counted,
never delayed. Every request that was sent lands in the :class:`History`.
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

from pytest_operator._history import History, Op, Outcome

# ---------------------------------------------------------------- the requester


@dataclass(frozen=True, slots=True)
class Response:
    """What a requester reports for one request."""

    outcome: Outcome
    detail: str | None = None


class Requester(Protocol):
    """Sends one request to a target; a subject's client implements this.

    It maps the subject's answer onto an :class:`Outcome` and should not raise
    for the subject's failures (an exception is recorded as ``error``). It must
    bound its own network waits; the workload also applies a per-request timeout.
    """

    async def __call__(self, target: str, key: str) -> Response: ...

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
    or ``"random"`` (seeded by ``seed``).
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
    ) -> None:
        """Start sending in a background task and return at once.

        ``keys`` is a key chooser, one key, or a list of keys (chosen uniformly);
        ``duration`` cuts the pattern off after that many seconds.
        """
        if self._driver is not None:
            raise RuntimeError("the workload is already started; stop() it first")
        _check_duration("workload duration", duration)
        chooser = _as_chooser(keys)
        self._driver = asyncio.create_task(
            self._drive(pattern, chooser, duration), name="workload-driver"
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
    ) -> History:
        """Run a pattern to its end (or for ``duration`` seconds), drain, return the history."""
        if duration is None and _open_ended(pattern):
            raise ValueError("an open-ended pattern needs a duration to run()")
        await self.start(pattern, keys, duration=duration)
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

    async def _drive(self, pattern: Pattern, keys: KeyChooser, duration: float | None) -> None:
        clock = self.history.clock
        loop = asyncio.get_running_loop()
        start_mono = time.monotonic()
        start_epoch = clock.to_epoch(start_mono)
        key_stream = keys.stream()
        if self.choice == "random":
            rng = random.Random(self.seed)
            targets = self.targets
            target_stream: Iterator[str] = (
                targets[rng.randrange(len(targets))] for _ in itertools.count()
            )
        else:
            target_stream = itertools.cycle(self.targets)
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
            target, key = next(target_stream), next(key_stream)
            if len(self._in_flight) >= self.max_in_flight or -delay > self.max_lag:
                self.dropped += 1
                continue
            task = loop.create_task(self._one(next(self._index), target, key, clock.to_epoch(due)))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _one(self, index: int, target: str, key: str, scheduled: float) -> None:
        clock = self.history.clock
        send = clock.now()
        self._lateness.append(send - scheduled)
        recv: float | None
        gave_up: float | None = None
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.requester(target, key)
            recv = clock.now()
            outcome, detail = response.outcome, response.detail
        except TimeoutError:
            recv, outcome, detail = None, Outcome.TIMEOUT, f"no answer within {self.timeout} s"
        except asyncio.CancelledError:
            self.history.append(
                Op(
                    index,
                    target,
                    key,
                    scheduled,
                    send,
                    None,
                    Outcome.TIMEOUT,
                    "cancelled at stop",
                    gave_up=clock.now() - send,
                )
            )
            raise
        except Exception as exc:
            recv, outcome, detail = clock.now(), Outcome.ERROR, f"requester raised {exc!r}"
        if outcome is Outcome.TIMEOUT:
            # However the timeout was noticed (here, or by the requester's own clock), the
            # client waited until now and never learnt the outcome: no receive time.
            gave_up = (recv if recv is not None else clock.now()) - send
            recv = None
        self.history.append(
            Op(index, target, key, scheduled, send, recv, outcome, detail, gave_up=gave_up)
        )


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
