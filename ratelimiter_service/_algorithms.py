"""In-process models of the four algorithms, step for step the same as the Lua scripts.

They serve the ``local`` failure policy (a node limiting on its own while Redis is
unreachable) and the tests, which replay the scripts against them. Times are in
microseconds; every function takes the time explicitly so that nothing caches a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from ._config import Algorithm, LimitSpec


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    count: int
    remaining: int
    retry_after_us: int
    reset_us: int


@dataclass(slots=True)
class _LogState:
    entries: deque[tuple[int, int]] = field(default_factory=deque)  # (time_us, cost)
    total: int = 0


@dataclass(slots=True)
class _WindowState:
    index: int | None = None
    current: int = 0
    previous: int = 0


@dataclass(slots=True)
class _GcraState:
    tat: float = 0.0


def sliding_log(state: _LogState, spec: LimitSpec, cost: int, now: int) -> Decision:
    window = spec.window_ms * 1000
    limit = spec.limit
    cutoff = now - window
    while state.entries and state.entries[0][0] <= cutoff:
        state.total -= state.entries.popleft()[1]
    if not state.entries:
        state.total = 0
    allowed = cost > 0 and state.total + cost <= limit
    if allowed:
        state.entries.append((now, cost))
        state.total += cost
    retry = 0
    if cost > 0 and not allowed:
        if cost > limit:
            retry = window
        else:
            need = state.total + cost - limit
            freed = 0
            for at, entry_cost in state.entries:
                freed += entry_cost
                if freed >= need:
                    retry = at + window - now
                    break
            retry = max(retry, 1)
    reset = max(state.entries[0][0] + window - now, 0) if state.entries else 0
    return Decision(allowed, state.total, max(limit - state.total, 0), retry, reset)


def _window_index(state: _WindowState, window: int, now: int) -> tuple[int, int]:
    index = now // window
    return index, now - index * window


def sliding_window(state: _WindowState, spec: LimitSpec, cost: int, now: int) -> Decision:
    window = spec.window_ms * 1000
    limit = spec.limit
    index, elapsed = _window_index(state, window, now)
    current, previous = state.current, state.previous
    if state.index is None:
        current = previous = 0
    elif state.index == index - 1:
        previous, current = current, 0
    elif state.index < index:
        previous = current = 0
    elif state.index > index:
        index, elapsed = state.index, 0
    estimate = float(previous) * (window - elapsed) / window + current
    allowed = cost > 0 and estimate + cost <= limit
    if allowed:
        current += cost
        estimate += cost
        state.index, state.current, state.previous = index, current, previous
    retry = 0.0
    if cost > 0 and not allowed:
        if cost > limit:
            retry = 2 * window
        elif current + cost > limit:
            after = 0.0
            if limit - cost < current:
                after = window * (1 - (limit - cost) / current)
            retry = (window - elapsed) + after
        else:
            retry = window * (1 - (limit - current - cost) / previous) - elapsed
        retry = max(math.ceil(retry), 1)
    remaining = max(math.floor(limit - estimate), 0)
    return Decision(allowed, math.ceil(estimate), remaining, int(retry), window - elapsed)


def fixed_window(state: _WindowState, spec: LimitSpec, cost: int, now: int) -> Decision:
    window = spec.window_ms * 1000
    limit = spec.limit
    index, elapsed = _window_index(state, window, now)
    current = state.current
    if state.index is None or state.index < index:
        current = 0
    elif state.index > index:
        index, elapsed = state.index, 0
    allowed = cost > 0 and current + cost <= limit
    if allowed:
        current += cost
        state.index, state.current = index, current
    retry = 0
    if cost > 0 and not allowed:
        retry = window if cost > limit else window - elapsed
    return Decision(allowed, current, max(limit - current, 0), retry, window - elapsed)


def gcra(state: _GcraState, spec: LimitSpec, cost: int, now: int) -> Decision:
    window = spec.window_ms * 1000
    limit = spec.limit
    interval = window / limit
    tat = max(state.tat, float(now))
    allowed = False
    retry = 0
    if cost > 0:
        new_tat = tat + cost * interval
        wait = new_tat - window - now
        if wait <= 1:
            allowed = True
            tat = new_tat
            state.tat = tat
        else:
            retry = math.ceil(wait)
    used = tat - now
    remaining = min(max(math.floor((window - used + 1) / interval), 0), limit)
    return Decision(allowed, limit - remaining, remaining, retry, math.ceil(used))


State = _LogState | _WindowState | _GcraState


def new_state(algorithm: Algorithm) -> State:
    if algorithm is Algorithm.SLIDING_LOG:
        return _LogState()
    if algorithm is Algorithm.GCRA:
        return _GcraState()
    return _WindowState()


def decide(state: State, spec: LimitSpec, cost: int, now_us: int) -> Decision:
    """Apply ``spec``'s algorithm to ``state`` (as made by new_state for that algorithm)."""
    algorithm = spec.algorithm
    if algorithm is Algorithm.SLIDING_LOG and isinstance(state, _LogState):
        return sliding_log(state, spec, cost, now_us)
    if algorithm is Algorithm.GCRA and isinstance(state, _GcraState):
        return gcra(state, spec, cost, now_us)
    if isinstance(state, _WindowState):
        if algorithm is Algorithm.SLIDING_WINDOW:
            return sliding_window(state, spec, cost, now_us)
        if algorithm is Algorithm.FIXED_WINDOW:
            return fixed_window(state, spec, cost, now_us)
    raise TypeError(f"state {type(state).__name__} does not fit algorithm {algorithm.value}")


class LocalLimiter:
    """Per-key model states, used by a node while Redis is unreachable (policy ``local``)."""

    __slots__ = ("_states",)

    def __init__(self) -> None:
        self._states: dict[tuple[str, LimitSpec], State] = {}

    def decide(self, key: str, spec: LimitSpec, cost: int, now_us: int) -> Decision:
        state = self._states.get((key, spec))
        if state is None:
            state = self._states[key, spec] = new_state(spec.algorithm)
        return decide(state, spec, cost, now_us)

    def peek(self, key: str, spec: LimitSpec, now_us: int) -> Decision:
        state = self._states.get((key, spec)) or new_state(spec.algorithm)
        return decide(state, spec, 0, now_us)

    def reset(self, key: str) -> None:
        for stored in [k for k in self._states if k[0] == key]:
            del self._states[stored]

    def clear(self) -> None:
        self._states.clear()
