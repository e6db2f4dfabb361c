"""What happens during a run, as it happens: the events an operator's listeners receive.

The monitor calls its listeners on every tick (the observation it just recorded and the
violations active after it) and as each violation is confirmed or cleared; the operator
adds the faults injected and healed, the diagnoses made, every audit entry of its action
runner, the remediations and the recoveries measured. A listener (the live view, say)
sees the run from the same observations the monitor records, not from a replay of logs.

Listeners are called synchronously on the event loop, so they must be cheap: record the
event and return. A listener that raises is logged and left out of the rest of the run;
it never fails the run it watches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_operator._invariants import Violation
from pytest_operator._signals import Observation

if TYPE_CHECKING:
    from pytest_operator._actions import AuditEntry
    from pytest_operator._chaos import Injection
    from pytest_operator._diagnosis import Diagnosis
    from pytest_operator._remediation import Recovery, Remediation

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MonitorStarted:
    """A monitor run began (``until``: the invariant it stops at, if one)."""

    at: float
    until: str | None
    timeout: float


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick: the observation recorded (None when observing failed, ``error`` says
    why) and the violations active after it was evaluated. ``source`` is "monitor" for a
    monitor run's tick and "recovery" for an observation made while waiting for a
    recovery (then ``active`` is empty: that wait does not confirm violations)."""

    at: float
    observation: Observation | None
    active: tuple[Violation, ...] = ()
    error: str | None = None
    source: str = "monitor"


@dataclass(frozen=True, slots=True)
class ViolationConfirmed:
    violation: Violation


@dataclass(frozen=True, slots=True)
class ViolationCleared:
    violation: Violation
    """The violation, its ``cleared_at`` set."""


@dataclass(frozen=True, slots=True)
class MonitorStopped:
    at: float
    stopped_by: str
    """The invariant that stopped it, or "timeout"."""
    fault_at: float | None


@dataclass(frozen=True, slots=True)
class FaultInjected:
    injection: Injection
    """The live injection: its ``active`` and ``healed_at`` change when it heals."""


@dataclass(frozen=True, slots=True)
class FaultHealed:
    injection: Injection


@dataclass(frozen=True, slots=True)
class Diagnosed:
    at: float
    diagnosis: Diagnosis


@dataclass(frozen=True, slots=True)
class Audited:
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class Remediated:
    at: float
    remediation: Remediation


@dataclass(frozen=True, slots=True)
class RecoveryMeasured:
    at: float
    remediation: Remediation
    recovery: Recovery | None
    """None: it did not recover (``error`` says how)."""
    error: str | None = None


MonitorEvent = MonitorStarted | Tick | ViolationConfirmed | ViolationCleared | MonitorStopped
Event = (
    MonitorEvent | FaultInjected | FaultHealed | Diagnosed | Audited | Remediated | RecoveryMeasured
)
Listener = Callable[[Event], None]


class Listeners:
    """A list of listeners, each called with every event; one that raises is logged once
    and dropped, so a broken view never breaks the run it watches."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def __len__(self) -> int:
        return len(self._listeners)

    def add(self, listener: Listener) -> Callable[[], None]:
        """Subscribe ``listener``; returns the function that unsubscribes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def emit(self, event: Event) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed; it is unsubscribed", listener)
                if listener in self._listeners:
                    self._listeners.remove(listener)
