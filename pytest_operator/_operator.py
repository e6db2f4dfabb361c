"""The operator: what a scenario holds to monitor the subject and judge a fault.

It ties one test's pieces together: the subject session (observe, invariants,
actions), the faults injected so far (their ground truth and injection times), and
the monitor. Each monitor run is kept, so reports can show every timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_operator._actions import ActionRunner
from pytest_operator._causes import RootCause
from pytest_operator._monitor import Monitor, MonitorRun

if TYPE_CHECKING:
    from pytest_operator._chaos import Injection
    from pytest_operator._subject import SubjectSession


@dataclass(slots=True)
class InjectionLog:
    """Every fault injected during one test, in order, marker and imperative alike."""

    injections: list[Injection] = field(default_factory=list)

    def add(self, injection: Injection) -> None:
        self.injections.append(injection)

    def root_causes(self) -> tuple[RootCause, ...]:
        causes: list[RootCause] = []
        for inj in self.injections:
            for cause in inj.fault.root_causes:
                if cause not in causes:
                    causes.append(cause)
        return tuple(causes)

    def first_injected_at(self, before: float | None = None) -> float | None:
        times = [
            i.injected_at
            for i in self.injections
            if i.injected_at > 0 and (before is None or i.injected_at <= before)
        ]
        return min(times) if times else None


class Operator:
    def __init__(
        self,
        session: SubjectSession,
        injections: InjectionLog,
        *,
        interval: float,
    ) -> None:
        self.session = session
        self.injections = injections
        self.interval = interval
        self.runs: list[MonitorRun] = []
        self.actions = ActionRunner({a.name: a for a in session.actions})
        self._monitor = Monitor(session.observe, session.invariants, interval=interval)

    @property
    def invariants(self) -> Sequence[str]:
        return tuple(i.name for i in self._monitor.invariants)

    async def monitor(
        self, until: str | None = None, *, timeout: float = 15.0, settle: float = 0.5
    ) -> MonitorRun:
        """Observe until ``until`` is violated (then ``settle`` s more) or ``timeout`` s pass.

        Time to detect counts from the first fault injected in this test, when there is one.
        """
        run = await self._monitor.run(timeout=timeout, until=until, settle=settle)
        run.fault_at = self.injections.first_injected_at(before=run.ended_at)
        self.runs.append(run)
        return run

    def expected_cause(self) -> RootCause:
        """The root cause the injected chaos should be diagnosed as."""
        causes = self.injections.root_causes()
        if len(causes) != 1:
            what = ", ".join(map(str, causes)) or "no fault"
            raise AssertionError(
                f"cannot tell the expected root cause: this test injected {what};"
                " pass expected=RootCause(...) explicitly"
            )
        return causes[0]
