"""Closing the loop: the operator remedies what it diagnosed, and checks the recovery.

:func:`remediate` takes a diagnosis's recommended actions as an ordered workflow: each
step is validated against the subject's catalogue and run through the
:class:`ActionRunner`'s policy (approval, dry-run, kill switch, retries, audit); a step
that is refused or fails stops the workflow. The :class:`Remediation` records every
step and when the first action started, from which :func:`wait_recovered` measures the
time to recover: every invariant (and the monitor's own health check) holding for a
sustained period.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_operator._actions import ActionError, ActionRunner, AuditEntry, Decision
from pytest_operator._diagnosis import Diagnosis
from pytest_operator._invariants import Invariant
from pytest_operator._monitor import Observe, unhealthy

if TYPE_CHECKING:
    from pytest_operator._anomalies import Anomaly
    from pytest_operator._history import History
    from pytest_operator._linearizable import Model


class NotRecovered(AssertionError):
    """The subject did not stay healthy for the sustained period in time."""


@dataclass(frozen=True, slots=True)
class Step:
    """One recommended action and what the runner did with it."""

    action: str
    args: tuple[tuple[str, str], ...]
    outcome: str
    """The audit outcome: ok, dry-run, refused, failed or unverified."""
    detail: str
    attempts: int
    started_at: float
    """When it began to run, after the decision (a step that never ran: when it was
    decided); time to recover counts from the first step's."""
    ended_at: float
    decision: Decision | None = None
    """Why the runner ran it or not (None: the runner never got to decide)."""
    approved_by: str | None = None
    """Who let it run (the policy, the approver, the person at the terminal)."""


@dataclass(frozen=True, slots=True)
class Remediation:
    """What the operator did about one diagnosis."""

    engine: str
    cause: str | None
    """The top hypothesis remedied (None: the diagnosis named no fault)."""
    steps: tuple[Step, ...]

    @property
    def ok(self) -> bool:
        """Every step ran and succeeded (a dry run is not ok: nothing ran)."""
        return bool(self.steps) and all(s.outcome == "ok" for s in self.steps)

    @property
    def started_at(self) -> float | None:
        """Epoch seconds when the first action started (time to recover counts from it)."""
        return self.steps[0].started_at if self.steps else None

    def describe(self) -> str:
        if not self.steps:
            return f"{self.engine}: nothing to do for {self.cause or 'no fault'}"
        done = "; ".join(
            f"{s.action}({', '.join(f'{k}={v}' for k, v in s.args)}): {s.outcome} ({s.detail})"
            for s in self.steps
        )
        return f"{self.engine} on {self.cause}: {done}"

    def to_markdown(self, recovery: Recovery | None = None) -> str:
        """The workflow as a person reads it in a report: each step, who let it run, what
        came of it; then the recovery (or that none was measured)."""
        lines = [f"## Remediation ({self.engine}) of {self.cause or 'no fault'}"]
        if not self.steps:
            lines.append("\nNothing recommended: nothing done.")
        else:
            lines += ["", "| # | action | decision | approved by | outcome | attempts | detail |"]
            lines.append("|---|---|---|---|---|---|---|")
            for i, s in enumerate(self.steps, 1):
                call = f"`{s.action}({', '.join(f'{k}={v}' for k, v in s.args)})`"
                cells = (s.decision or "-", s.approved_by or "-", s.outcome, s.attempts, s.detail)
                lines.append(f"| {i} | {call} | " + " | ".join(map(str, cells)) + " |")
        if recovery is not None:
            lines.append(
                f"\n**Recovered** {recovery.time_to_recover:.2f} s after the first action"
                f" (healthy {recovery.sustained:.1f} s in a row"
                + (
                    f"; {recovery.history_ops} client ops after it judged"
                    if recovery.history_ops
                    else ""
                )
                + ")."
            )
        else:
            lines.append("\nNo recovery measured.")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Recovery:
    remediation: Remediation
    recovered_at: float
    """Epoch seconds of the first observation of the sustained healthy stretch."""
    time_to_recover: float
    """Seconds from the first action to ``recovered_at``."""
    sustained: float
    history_ops: int = 0
    """Client ops judged by the subject's consistency model after the fix (0: no model)."""


async def remediate(diagnosis: Diagnosis, runner: ActionRunner) -> Remediation:
    """Run ``diagnosis``'s recommendations in order through ``runner``; stop at the first
    step refused or failed (an action or argument outside the catalogue is refused and
    audited by the runner, never run)."""
    top = diagnosis.top
    steps: list[Step] = []
    for rec in diagnosis.recommendations:
        started = time.time()
        before = len(runner.audit)
        try:
            entry = await runner.execute(rec.action, dict(rec.args))
        except ActionError as exc:
            refused = runner.audit[-1] if len(runner.audit) > before else None
            steps.append(_step(rec.action, rec.args, refused, started, str(exc)))
            break
        steps.append(_step(rec.action, rec.args, entry, started, entry.detail))
    return Remediation(diagnosis.engine, str(top.cause) if top else None, tuple(steps))


def _step(
    action: str,
    args: tuple[tuple[str, str], ...],
    entry: AuditEntry | None,
    started: float,
    detail: str,
) -> Step:
    if entry is None:
        return Step(action, args, "failed", detail, 0, started, time.time())
    return Step(
        action,
        entry.args,
        entry.outcome,
        detail,
        entry.attempts,
        started if entry.started_at is None else entry.started_at,
        time.time(),
        entry.decision,
        entry.approved_by,
    )


async def wait_recovered(
    remediation: Remediation,
    observe: Observe,
    invariants: tuple[Invariant, ...],
    *,
    within: float,
    sustain: float,
    interval: float,
    history: History | None = None,
    model: Model | None = None,
) -> Recovery:
    """Observe until every invariant holds and every component answers for ``sustain``
    seconds in a row; the stretch must begin within ``within`` s of the first action.
    With a ``model``, the client ``history`` after the fix must satisfy it too."""
    if not remediation.ok or remediation.started_at is None:
        raise NotRecovered(f"nothing was remedied: {remediation.describe()}")
    origin = remediation.started_at
    healthy_since: float | None = None
    last = "no observation yet"
    while True:
        now = time.time()
        try:
            async with asyncio.timeout(max(2.0, 4 * interval)):
                obs = await observe()
        except Exception as exc:
            bad = [f"observe() failed: {type(exc).__name__}: {exc}"]
        else:
            bad = unhealthy(obs)
            bad += [f"{inv.name}: {f.message}" for inv in invariants for f in inv.check(obs)]
            now = obs.at
        if bad:
            healthy_since = None
            last = "; ".join(bad[:3])
        elif healthy_since is None:
            healthy_since = now
        if healthy_since is not None and now - healthy_since >= sustain:
            if healthy_since - origin > within:
                raise NotRecovered(
                    f"not recovered within {within:.1f} s of the first action: healthy only"
                    f" after {healthy_since - origin:.2f} s ({remediation.describe()})"
                )
            judged = 0
            if history is not None and model is not None:
                judged, anomalies = judge_after(history, model, healthy_since)
                if anomalies:
                    raise NotRecovered(
                        f"the client history after the fix breaks the {model.name} model:"
                        f" {'; '.join(a.describe() for a in anomalies[:3])}"
                        f" ({remediation.describe()})"
                    )
            return Recovery(remediation, healthy_since, healthy_since - origin, sustain, judged)
        if time.time() - origin > within + sustain:
            raise NotRecovered(
                f"not recovered within {within:.1f} s of the first action"
                f" ({remediation.describe()}); still: {last}"
            )
        await asyncio.sleep(interval)


def judge_after(history: History, model: Model, since: float) -> tuple[int, tuple[Anomaly, ...]]:
    """The client ops sent at or after ``since``, judged by ``model``: how many, and the
    anomalies among them. The whole history is checked (what came before decides what a
    later read may see), going on past the fault's own anomalies as the monitor's watch
    does; only the anomalies whose culprit was sent after ``since`` are the recovered
    system's."""
    from pytest_operator._linearizable import LinearizabilityWatch

    watch = LinearizabilityWatch(history, model)
    watch.check(time.time())
    after = tuple(a for a in watch.anomalies if a.culprit.send >= since)
    return sum(1 for op in history.snapshot() if op.send >= since), after
