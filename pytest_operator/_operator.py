"""The operator: what a scenario holds to monitor the subject and judge a fault.

It ties one test's pieces together: the subject session (observe, invariants,
actions), the faults injected so far (their ground truth and injection times), the
client history, and the monitor. Each monitor run is kept, so reports can show every
timeline; so is each check of the history against the subject's consistency model.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_operator._actions import Action, ActionRunner, AuditEntry
from pytest_operator._causes import RootCause
from pytest_operator._diagnosis import ActionInfo, Case, Diagnosis, DiagnosisEngine
from pytest_operator._events import (
    Audited,
    Diagnosed,
    Event,
    FaultHealed,
    FaultInjected,
    Listener,
    Listeners,
    RecoveryMeasured,
    Remediated,
    Tick,
)
from pytest_operator._monitor import Monitor, MonitorRun
from pytest_operator._signals import Observation

if TYPE_CHECKING:
    from pytest_operator._chaos import Injection
    from pytest_operator._history import History
    from pytest_operator._linearizable import CheckResult
    from pytest_operator._remediation import Recovery, Remediation
    from pytest_operator._subject import SubjectSession


@dataclass(slots=True)
class InjectionLog:
    """Every fault injected during one test, in order, marker and imperative alike."""

    injections: list[Injection] = field(default_factory=list)
    on_add: list[Callable[[Injection], None]] = field(default_factory=list)
    """Called with each injection as it is recorded (the operator's listeners hear of it)."""

    def add(self, injection: Injection) -> None:
        self.injections.append(injection)
        for hook in tuple(self.on_add):
            hook(injection)

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


class Misdiagnosed(AssertionError):
    pass


def action_info(action: Action) -> ActionInfo:
    return ActionInfo(
        action.name,
        action.description,
        str(action.risk),
        tuple((p.name, p.choices) for p in action.params),
        remedies=tuple(sorted(action.remedies)),
        target=action.target,
        required=tuple(p.name for p in action.params if p.required),
    )


@dataclass(frozen=True, slots=True)
class DiagnosisRecord:
    """One engine's answer for one monitor run, against the cause actually injected."""

    expected: RootCause | None
    diagnosis: Diagnosis
    rank: int | None
    time_to_detect: float | None
    case: Case


class Operator:
    def __init__(
        self,
        session: SubjectSession,
        injections: InjectionLog,
        *,
        interval: float,
        engines: Sequence[DiagnosisEngine] = (),
        history: History | None = None,
    ) -> None:
        self.session = session
        self.history = history
        self.checks: list[CheckResult] = []
        self.injections = injections
        self.interval = interval
        self.engines = tuple(engines)
        self.runs: list[MonitorRun] = []
        self.diagnoses: list[DiagnosisRecord] = []
        self.remediations: list[Remediation] = []
        self.recoveries: list[Recovery] = []
        self.actions = ActionRunner({a.name: a for a in session.actions})
        self._monitor = Monitor(session.observe, session.invariants, interval=interval)
        self.listeners = Listeners()
        """Hear the run as it happens (see :meth:`subscribe`)."""
        self._unhook_monitor: Callable[[], None] | None = None
        self._unhealed: list[Injection] = []
        injections.on_add.append(self._injected)
        self.actions.on_audit.append(self._audited)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event of this operator's run from now on (see
        ``_events``): each monitor tick, violations confirmed and cleared, faults injected
        and healed, diagnoses, audit entries, remediations, recoveries. Returns the
        function that unsubscribes it. Without listeners the monitor builds no event."""
        remove = self.listeners.add(listener)
        if self._unhook_monitor is None:
            self._unhook_monitor = self._monitor.listeners.add(self._forward)

        def unsubscribe() -> None:
            remove()
            if not self.listeners and self._unhook_monitor is not None:
                self._unhook_monitor()
                self._unhook_monitor = None

        return unsubscribe

    def _emit(self, event: Event) -> None:
        if self.listeners:
            self.listeners.emit(event)

    def _forward(self, event: Event) -> None:
        """A monitor event, after the faults healed since the last one."""
        if isinstance(event, Tick):
            self._check_healed()
        self._emit(event)

    def _check_healed(self) -> None:
        if not self._unhealed:
            return
        healed = [i for i in self._unhealed if i.healed_at is not None]
        for injection in healed:
            self._unhealed.remove(injection)
            self._emit(FaultHealed(injection))

    def _injected(self, injection: Injection) -> None:
        self._unhealed.append(injection)
        self._emit(FaultInjected(injection))

    def _audited(self, entry: AuditEntry) -> None:
        self._emit(Audited(entry))

    @property
    def invariants(self) -> Sequence[str]:
        return tuple(i.name for i in self._monitor.invariants)

    async def monitor(
        self, until: str | None = None, *, timeout: float = 15.0, settle: float = 1.0
    ) -> MonitorRun:
        """Observe until ``until`` is violated (then ``settle`` s more) or ``timeout`` s pass.

        Time to detect counts from the first fault injected in this test, when there is one.
        """
        run = await self._monitor.run(timeout=timeout, until=until, settle=settle)
        run.fault_at = self.injections.first_injected_at(before=run.ended_at)
        self.runs.append(run)
        return run

    def check_history(self) -> CheckResult:
        """Judge the client history so far against the subject's consistency model (a
        register: linearizability, per key). Ops still in flight count as indeterminate.
        The result is kept for the report (its anomalies, their stretch as a picture)."""
        from pytest_operator._linearizable import check

        model = self.session.model
        if model is None:
            raise AssertionError(
                "this subject declares no consistency model (its session's model is None):"
                " there is nothing to check the history against"
            )
        if self.history is None:
            raise AssertionError("this operator was made without the test's history")
        ops = self.history.snapshot() + self.history.in_flight()
        result = check(ops, model)
        self.checks.append(result)
        return result

    def expected_causes(self) -> tuple[RootCause, ...]:
        """The root causes the injected chaos should be diagnosed as (one per fault)."""
        causes = self.injections.root_causes()
        if not causes:
            raise AssertionError(
                "cannot tell the expected root cause: this test injected no fault;"
                " pass expected=RootCause(...) explicitly"
            )
        return causes

    def expected_cause(self) -> RootCause:
        """The root cause the injected chaos should be diagnosed as (exactly one)."""
        causes = self.expected_causes()
        if len(causes) != 1:
            raise AssertionError(
                f"cannot tell the expected root cause: this test injected"
                f" {', '.join(map(str, causes))}; pass expected=RootCause(...) explicitly"
            )
        return causes[0]

    def case(self, run: MonitorRun) -> Case:
        """The evidence an engine gets: topology, timeline, violations, action catalogue."""
        return Case(
            topology=self.session.topology,
            observations=tuple(run.timeline.observations),
            violations=tuple(run.violations),
            actions=tuple(action_info(a) for a in self.session.actions),
        )

    async def diagnose(self, run: MonitorRun) -> list[Diagnosis]:
        """Every configured engine's diagnosis of the same evidence."""
        return await self._diagnose(self.case(run))

    async def _diagnose(self, case: Case) -> list[Diagnosis]:
        if not self.engines:
            raise AssertionError("no diagnosis engine is configured for this run")
        diagnoses = []
        for engine in self.engines:
            diagnosis = await engine.diagnose(case)
            self._emit(Diagnosed(time.time(), diagnosis))
            diagnoses.append(diagnosis)
        return diagnoses

    async def assert_diagnosis(
        self,
        run: MonitorRun,
        expected: RootCause | Sequence[RootCause] | None = None,
        *,
        top_k: int | None = None,
    ) -> list[Diagnosis]:
        """Every engine must rank each injected root cause within its first ``top_k``.

        ``expected`` defaults to the causes of the faults this test injected; ``top_k``
        defaults to their number (one fault: ranked first; two faults injected together:
        both within the top 2).
        """
        if expected is None:
            causes = self.expected_causes()
        elif isinstance(expected, RootCause):
            causes = (expected,)
        else:
            causes = tuple(expected)
            if not causes:
                raise ValueError("expected names no root cause")
        k = len(causes) if top_k is None else top_k
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}")
        first = run.first_detection()
        ttd = run.delay(first) if first is not None and run.fault_at is not None else None
        case = self.case(run)
        diagnoses = await self._diagnose(case)
        failures = []
        for d in diagnoses:
            named = d.top.cause if d.top is not None else "no fault"
            for cause in causes:
                rank = d.rank_of(cause)
                self.diagnoses.append(DiagnosisRecord(cause, d, rank, ttd, case))
                if rank is not None and rank <= k:
                    continue
                where = "not ranked" if rank is None else f"ranked {_ordinal(rank)}"
                want = f"{cause}" if k == 1 else f"{cause} within the top {k}"
                failures.append(
                    f"{d.engine}: diagnosis named {named}; expected {want}; {where}"
                    f" (top 3: {d.top_causes(3)})"
                )
        if failures:
            raise Misdiagnosed("; ".join(failures))
        return diagnoses

    async def remediate(self, run: MonitorRun, diagnosis: Diagnosis | None = None) -> Remediation:
        """Remedy the top hypothesis: ``diagnosis`` (default: the first engine's diagnosis
        of ``run``) recommends actions, run in order through :attr:`actions` (the runner:
        its approval policy, dry-run, kill switch, retries and audit), stopping at the
        first refused or failed. What was done is returned and kept for the report."""
        from pytest_operator._remediation import remediate

        if diagnosis is None:
            diagnosis = (await self._diagnose(self.case(run)))[0]
        remediation = await remediate(diagnosis, self.actions)
        self.remediations.append(remediation)
        self._emit(Remediated(time.time(), remediation))
        return remediation

    async def assert_recovered(
        self, remediation: Remediation, *, within: float, sustain: float = 2.0
    ) -> Recovery:
        """Every invariant holds, and every component answers, for ``sustain`` s in a row,
        starting within ``within`` s of the remediation's first action, and the client
        history from then on satisfies the subject's consistency model, if it declares one
        (a :class:`NotRecovered` otherwise). The time to recover is kept for the report."""
        from pytest_operator._remediation import NotRecovered, wait_recovered

        try:
            recovery = await wait_recovered(
                remediation,
                self._observe_for_recovery() if self.listeners else self.session.observe,
                tuple(self._monitor.invariants),
                within=within,
                sustain=sustain,
                interval=self.interval,
                history=self.history,
                model=self.session.model,
            )
        except NotRecovered as exc:
            self._emit(RecoveryMeasured(time.time(), remediation, None, str(exc)))
            raise
        self.recoveries.append(recovery)
        self._emit(RecoveryMeasured(time.time(), remediation, recovery))
        return recovery

    def _observe_for_recovery(self) -> Callable[[], Awaitable[Observation]]:
        """The subject's observe, each observation (or failure) told as a recovery tick."""
        observe = self.session.observe

        async def observed() -> Observation:
            try:
                obs = await observe()
            except Exception as exc:
                self._check_healed()
                self._emit(
                    Tick(time.time(), None, error=f"{type(exc).__name__}: {exc}", source="recovery")
                )
                raise
            self._check_healed()
            self._emit(Tick(obs.at, obs, source="recovery"))
            return obs

        return observed

    async def assert_no_fault_diagnosed(self, run: MonitorRun) -> list[Diagnosis]:
        """For controls: no engine may name a root cause."""
        case = self.case(run)
        diagnoses = await self._diagnose(case)
        bad = []
        for d in diagnoses:
            self.diagnoses.append(DiagnosisRecord(None, d, None, None, case))
            if d.top is not None:
                bad.append(f"{d.engine} named {d.top.cause} ({d.top.confidence:.0%})")
        if bad:
            raise Misdiagnosed(f"a control run was diagnosed with a fault: {'; '.join(bad)}")
        return diagnoses


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
