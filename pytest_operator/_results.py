"""Collects what every scenario saw (detection, diagnoses, remediation and recovery) and
reports it at the end:
a line per scenario, the accuracy table, and the accuracy JSON.

Each scenario trial's results ride on its call-phase test report (the attribute
:data:`REPORT_ATTR`, JSON data) and are collected from the reports. In one process
that is a detour; under pytest-xdist it is how they reach the controller: a worker
sends every report to it whole, extra attributes included, as each test ends. So the
controller alone prints the summary and writes ``.run/accuracy.json`` and
``.run/scenarios.json`` for the whole run, and a worker that crashes loses only the
test it was running. Workers write each diagnosed case to ``.run/cases/`` themselves,
under the test's own name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_operator._accuracy import CaseResult, cause_str, summarize, table, write_json
from pytest_operator._fixtures import OPERATOR
from pytest_operator._operator import Operator
from pytest_operator._remediation import Remediation
from pytest_operator._serde import case_to_json, from_data, to_data
from pytest_operator.plugin import OPTIONS, SKIPPED_ENGINES

REPORT_ATTR = "operator_scenario"
"""The test report attribute carrying a :class:`ScenarioReport` as JSON data."""


def xdist_worker(config: pytest.Config) -> str | None:
    """The pytest-xdist worker id (``gw0``...) when this process is one, else None."""
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput["workerid"])


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: str
    trial: int
    outcome: str
    expected: str | None
    detected: str | None
    """The first violation confirmed (invariant@component), if any."""
    time_to_detect: float | None
    ranks: tuple[tuple[str, int | None], ...]
    remediated: bool = False
    """The operator acted in this trial: a remediation (``operator.remediate``) ran at
    least one action (a dry run or a refusal runs nothing)."""
    time_to_recover: float | None = None
    """Seconds from the first remediation's first action to its sustained recovery
    (``operator.assert_recovered``); None when nothing recovered."""


RAN = frozenset({"ok", "failed", "unverified"})
"""The step outcomes of an action that ran (unlike "dry-run" and "refused")."""


def acted(remediation: Remediation) -> bool:
    """Whether ``remediation`` ran anything on the cluster."""
    return any(s.outcome in RAN for s in remediation.steps)


def _first_recovery(op: Operator, engine: str | None = None) -> float | None:
    """The time to recover of the first recovery (of a remediation of ``engine``'s
    diagnosis, if given)."""
    for r in op.recoveries:
        if engine is None or r.remediation.engine == engine:
            return r.time_to_recover
    return None


def scenario_result(nodeid: str, trial: int, outcome: str, op: Operator) -> ScenarioResult:
    expected = op.injections.root_causes()
    first = None
    ttd = None
    for run in op.runs:
        v = run.first_detection()
        if v is not None and (first is None or v.confirmed_at < first.confirmed_at):
            first, ttd = v, run.delay(v)
    return ScenarioResult(
        scenario=nodeid,
        trial=trial,
        outcome=outcome,
        expected=", ".join(map(str, expected)) or None,
        detected=None if first is None else f"{first.invariant}@{first.component}",
        time_to_detect=ttd,
        ranks=tuple((d.diagnosis.engine, d.rank) for d in op.diagnoses),
        remediated=any(acted(r) for r in op.remediations),
        time_to_recover=_first_recovery(op),
    )


def case_results(nodeid: str, trial: int, op: Operator) -> list[CaseResult]:
    engines = {r.engine for r in op.remediations if acted(r)}
    return [
        CaseResult(
            scenario=nodeid,
            trial=trial,
            engine=d.diagnosis.engine,
            expected=cause_str(d.expected),
            ranked=tuple(str(h.cause) for h in d.diagnosis.hypotheses),
            rank=d.rank,
            time_to_detect=d.time_to_detect,
            time_to_diagnose=d.diagnosis.latency_s,
            input_tokens=d.diagnosis.input_tokens,
            output_tokens=d.diagnosis.output_tokens,
            remediated=d.diagnosis.engine in engines,
            time_to_recover=_first_recovery(op, d.diagnosis.engine),
        )
        for d in op.diagnoses
    ]


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    """What one scenario trial adds to the run's summary, as it travels on its report."""

    order: int
    """The test's position in the collection (the same on every xdist worker)."""
    subject: str | None
    scenario: ScenarioResult
    cases: tuple[CaseResult, ...]


def _case_file(nodeid: str, trial: int) -> str:
    """``<module>-<test>-trial<N>.json``: unique per test, so workers never share a file."""
    path, _, name = nodeid.partition("::")
    stem = Path(path).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}-{name}") + f"-trial{trial}.json"


class Results:
    """A pytest plugin object: one per session (per process under xdist; the
    controller's collects every worker's results and reports them)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.worker = xdist_worker(config)
        self.reports: list[ScenarioReport] = []
        self._order: dict[str, int] = {}

    @property
    def scenarios(self) -> list[ScenarioResult]:
        return [r.scenario for r in self._in_order()]

    @property
    def cases(self) -> list[CaseResult]:
        return [c for r in self._in_order() for c in r.cases]

    def _in_order(self) -> list[ScenarioReport]:
        return sorted(self.reports, key=lambda r: r.order)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._order = {item.nodeid: i for i, item in enumerate(session.items)}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when == "call":
            op = item.stash.get(OPERATOR, None)
            if op is not None:
                callspec = getattr(item, "callspec", None)
                trial = int(callspec.params.get("operator_trial", 1)) if callspec else 1
                scenario = ScenarioReport(
                    order=self._order.get(item.nodeid, len(self._order)),
                    subject=self.config.stash[OPTIONS].subject,
                    scenario=scenario_result(item.nodeid, trial, report.outcome, op),
                    cases=tuple(case_results(item.nodeid, trial, op)),
                )
                setattr(report, REPORT_ATTR, to_data(scenario))
                self._keep_cases(item.nodeid, trial, op)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect a scenario's results from its report (a worker's, under xdist)."""
        data = getattr(report, REPORT_ATTR, None)
        if data is None or self.worker is not None:
            return
        scenario = from_data(ScenarioReport, data)
        self.reports.append(scenario)
        opts = self.config.stash[OPTIONS]
        if opts.subject is None and scenario.subject is not None:
            # an xdist controller collects nothing, so it learns the subject the scenarios'
            # markers chose (plugin.pytest_collection_modifyitems) from their workers
            self.config.stash[OPTIONS] = dataclasses.replace(opts, subject=scenario.subject)

    def _keep_cases(self, nodeid: str, trial: int, op: Operator) -> None:
        """Each diagnosed case as JSON under .run/cases/, for debugging and as test data."""
        written = set()
        for d in op.diagnoses:
            if id(d.case) in written:
                continue
            written.add(id(d.case))
            path = self.config.rootpath / ".run" / "cases" / _case_file(nodeid, trial)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(case_to_json(d.case) + "\n")
            os.replace(tmp, path)

    def json_path(self) -> Path:
        return self.config.rootpath / ".run" / "accuracy.json"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.worker is not None or not self.reports:
            return
        tr = terminalreporter
        tr.write_sep("=", "operator: scenarios")
        scenarios = self.scenarios
        for s in scenarios:
            ttd = "-" if s.time_to_detect is None else f"{s.time_to_detect:.2f} s"
            ranks = " ".join(f"{e}:{r if r is not None else '-'}" for e, r in s.ranks) or "-"
            name = s.scenario.split("::")[-1]
            line = (
                f"{s.outcome:<7} {name:<60} detected={s.detected or 'nothing'}"
                f" ttd={ttd} rank={ranks}"
            )
            if s.remediated:
                ttr = "-" if s.time_to_recover is None else f"{s.time_to_recover:.2f} s"
                line += f" ttr={ttr}"
            tr.write_line(line)
        cases = self.cases
        if cases:
            tr.write_sep("=", "operator: diagnosis accuracy")
            for line in table(summarize(cases)):
                tr.write_line(line)
            for why in self.config.stash.get(SKIPPED_ENGINES, []):
                tr.write_line(f"not run: {why}")
            path = self.json_path()
            write_json(path, cases)
            tr.write_line(f"accuracy written to {path}")
        out = self.config.rootpath / ".run" / "scenarios.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([to_data(s) for s in scenarios], indent=2) + "\n")
