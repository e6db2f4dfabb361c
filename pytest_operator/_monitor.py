"""The monitor loop: poll the subject, check invariants, keep a timeline.

The loop ticks on a fixed schedule (a slow observation delays the next tick; it
never bunches ticks up). Each tick's observation is checked against every
invariant; a finding that persists for its invariant's grace period becomes a
:class:`Violation`, confirmed at the tick that completes the grace period, and
cleared at the first tick without it. Times are epoch seconds on the monitor's
clock, so they line up with the fault's injection time and the client history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from pytest_operator._events import (
    Listeners,
    MonitorStarted,
    MonitorStopped,
    Tick,
    ViolationCleared,
    ViolationConfirmed,
)
from pytest_operator._invariants import Invariant, Violation
from pytest_operator._signals import Observation

Observe = Callable[[], Awaitable[Observation]]


class NotDetected(AssertionError):
    pass


class UnexpectedViolation(AssertionError):
    pass


class NotHealthy(RuntimeError):
    """The subject did not come back to health in time (between scenarios, say)."""


def unhealthy(obs: Observation) -> list[str]:
    """What keeps an observation from being healthy: a component that does not answer
    the monitor or says it is not ready, a link that is down."""
    bad = [
        f"{c.component} {'not ready' if c.reachable else 'unreachable'}"
        for c in obs.components
        if not c.reachable or c.ready is False
    ]
    bad += [f"{lk.source}->{lk.target} down" for lk in obs.links if lk.up is False]
    return bad


async def wait_healthy(
    observe: Observe, *, timeout: float, interval: float = 0.1, attempt_timeout: float = 5.0
) -> Observation:
    """Observe until every component answers and is ready and no link is down.

    A subject's state is only safe to reset, and a scenario only fair to start, once the
    cluster is healthy again: a store that has just restarted is ready before its
    clients have reconnected to it. Raises :class:`NotHealthy` naming what is not.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no observation yet"
    while True:
        try:
            async with asyncio.timeout(attempt_timeout):
                obs = await observe()
        except Exception as exc:  # a failing observation is one more reason to wait
            last = f"observe() failed: {type(exc).__name__}: {exc}"
        else:
            bad = unhealthy(obs)
            if not bad:
                return obs
            last = ", ".join(bad)
        if loop.time() >= deadline:
            raise NotHealthy(f"the subject was not healthy after {timeout:.0f} s: {last}")
        await asyncio.sleep(interval)


@dataclass(frozen=True, slots=True)
class ObserveError:
    """A tick whose observation failed: a harness or subject error, not a violation."""

    at: float
    error: str


@dataclass(slots=True)
class Timeline:
    observations: list[Observation] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    errors: list[ObserveError] = field(default_factory=list)

    def last_observation(self) -> Observation | None:
        return self.observations[-1] if self.observations else None


@dataclass(slots=True)
class MonitorRun:
    """What one monitor run saw; the assertions a scenario makes about it."""

    started_at: float
    ended_at: float
    timeline: Timeline
    fault_at: float | None
    """Epoch seconds when the active fault was injected (time to detect counts from here)."""
    until: str | None = None
    stopped_by: str = "timeout"

    @property
    def violations(self) -> list[Violation]:
        return self.timeline.violations

    def first(self, invariant: str, component: str | None = None) -> Violation | None:
        found = [
            v
            for v in self.timeline.violations
            if v.invariant == invariant and (component is None or v.component == component)
        ]
        return min(found, key=lambda v: v.confirmed_at) if found else None

    def first_detection(self) -> Violation | None:
        """The first violation confirmed in this run, whatever its invariant."""
        return min(self.violations, key=lambda v: v.confirmed_at) if self.violations else None

    def delay(self, violation: Violation) -> float:
        """Seconds from the fault's injection (or the run's start, without one) to detection."""
        origin = self.fault_at if self.fault_at is not None else self.started_at
        return max(0.0, violation.confirmed_at - origin)

    def time_to_detect(self, invariant: str, component: str | None = None) -> float | None:
        v = self.first(invariant, component)
        return None if v is None else self.delay(v)

    def _last(self) -> str:
        last = self.timeline.last_observation()
        return last.summary() if last is not None else "none"

    def assert_detected(
        self, invariant: str, *, within: float | None = None, component: str | None = None
    ) -> Violation:
        where = f" at {component}" if component else ""
        v = self.first(invariant, component)
        if v is None:
            seen = sorted({x.invariant for x in self.violations}) or ["nothing"]
            raise NotDetected(
                f"{invariant}{where} not detected within {self.ended_at - self.started_at:.1f} s"
                f" of monitoring (saw: {', '.join(seen)}; last observation: {self._last()})"
            )
        ttd = self.time_to_detect(invariant, component)
        assert ttd is not None
        if within is not None and ttd > within:
            raise NotDetected(
                f"{invariant}{where} not detected within {within:.1f} s: detected after"
                f" {ttd:.2f} s ({v.describe()})"
            )
        return v

    def assert_no_violation(self, *invariants: str) -> None:
        bad = [v for v in self.violations if not invariants or v.invariant in invariants]
        if bad:
            listed = "; ".join(v.describe() for v in bad[:5])
            more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
            raise UnexpectedViolation(
                f"expected no violation, saw {len(bad)}: {listed}{more}"
                f" (last observation: {self._last()})"
            )


class Monitor:
    def __init__(
        self,
        observe: Observe,
        invariants: Sequence[Invariant],
        *,
        interval: float = 0.25,
        observe_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"monitor interval must be > 0, got {interval}")
        names = [i.name for i in invariants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate invariant names: {', '.join(dupes)}")
        self._observe = observe
        self.invariants = tuple(invariants)
        self.interval = interval
        self.observe_timeout = observe_timeout or max(2.0, 4 * interval)
        self._clock = clock
        self.listeners = Listeners()
        """Called on every tick and as violations are confirmed and cleared (see
        ``_events``); nothing is built for them while there are none."""

    def invariant(self, name: str) -> Invariant:
        for inv in self.invariants:
            if inv.name == name:
                return inv
        valid = ", ".join(i.name for i in self.invariants)
        raise KeyError(f"unknown invariant {name!r} (valid: {valid})")

    async def run(
        self,
        *,
        timeout: float,
        until: str | None = None,
        settle: float = 0.0,
        fault_at: float | None = None,
    ) -> MonitorRun:
        """Observe for ``timeout`` s, or until ``until`` is violated (then ``settle`` s more)."""
        if until is not None:
            self.invariant(until)
        timeline = Timeline()
        pending: dict[tuple[str, str], Violation] = {}  # seen, grace not yet over
        active: dict[tuple[str, str], int] = {}  # index into timeline.violations
        loop = asyncio.get_running_loop()
        start_mono = loop.time()
        started_at = self._clock()
        stop_at_mono = start_mono + timeout
        listeners = self.listeners
        if listeners:
            listeners.emit(MonitorStarted(started_at, until, timeout))
        stopped_by = "timeout"
        tick = 0
        while True:
            now_mono = loop.time()
            if now_mono >= stop_at_mono:
                break
            try:
                async with asyncio.timeout(self.observe_timeout):
                    obs = await self._observe()
            except TimeoutError:
                error = ObserveError(self._clock(), f"observe() took over {self.observe_timeout} s")
                timeline.errors.append(error)
                if listeners:
                    listeners.emit(Tick(error.at, None, _active(timeline, active), error.error))
            except Exception as exc:  # a subject bug must not end the run silently
                error = ObserveError(self._clock(), f"{type(exc).__name__}: {exc}")
                timeline.errors.append(error)
                if listeners:
                    listeners.emit(Tick(error.at, None, _active(timeline, active), error.error))
            else:
                timeline.observations.append(obs)
                self._evaluate(obs, timeline, pending, active)
                if listeners:
                    listeners.emit(Tick(obs.at, obs, _active(timeline, active)))
                if (
                    until is not None
                    and stopped_by == "timeout"
                    and any(k[0] == until for k in active)
                ):
                    stopped_by = until
                    stop_at_mono = min(stop_at_mono, loop.time() + settle)
            tick += 1
            next_tick = start_mono + tick * self.interval
            now_mono = loop.time()
            if next_tick < now_mono:  # a slow observation: skip the missed ticks
                tick = int((now_mono - start_mono) / self.interval) + 1
                next_tick = start_mono + tick * self.interval
            await asyncio.sleep(max(0.0, min(next_tick, stop_at_mono) - now_mono))
        run = MonitorRun(
            started_at=started_at,
            ended_at=self._clock(),
            timeline=timeline,
            fault_at=fault_at,
            until=until,
            stopped_by=stopped_by,
        )
        if listeners:
            listeners.emit(MonitorStopped(run.ended_at, stopped_by, fault_at))
        return run

    def _evaluate(
        self,
        obs: Observation,
        timeline: Timeline,
        pending: dict[tuple[str, str], Violation],
        active: dict[tuple[str, str], int],
    ) -> None:
        now = obs.at
        seen: set[tuple[str, str]] = set()
        for inv in self.invariants:
            for finding in inv.check(obs):
                key = (inv.name, finding.component)
                if key in seen:
                    continue
                seen.add(key)
                if key in active:
                    continue
                first = pending.get(key)
                if first is None:
                    first = Violation(
                        invariant=inv.name,
                        category=inv.category,
                        component=finding.component,
                        message=finding.message,
                        first_seen=now,
                        confirmed_at=now,
                        value=finding.value,
                    )
                    pending[key] = first
                if now - first.first_seen >= inv.grace:
                    del pending[key]
                    confirmed = replace(
                        first, confirmed_at=now, message=finding.message, value=finding.value
                    )
                    active[key] = len(timeline.violations)
                    timeline.violations.append(confirmed)
                    if self.listeners:
                        self.listeners.emit(ViolationConfirmed(confirmed))
        for key in list(pending):
            if key not in seen:
                del pending[key]
        for key in list(active):
            if key not in seen:
                idx = active.pop(key)
                cleared = replace(timeline.violations[idx], cleared_at=now)
                timeline.violations[idx] = cleared
                if self.listeners:
                    self.listeners.emit(ViolationCleared(cleared))


def _active(timeline: Timeline, active: dict[tuple[str, str], int]) -> tuple[Violation, ...]:
    return tuple(timeline.violations[i] for i in active.values())
