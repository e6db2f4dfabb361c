"""Collects what every scenario saw (detection, diagnoses) and reports it at the end:
a line per scenario, the accuracy table, and the accuracy JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_operator._accuracy import CaseResult, cause_str, summarize, table, write_json
from pytest_operator._fixtures import OPERATOR
from pytest_operator._operator import Operator
from pytest_operator._serde import case_to_json, to_data


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
    )


def case_results(nodeid: str, trial: int, op: Operator) -> list[CaseResult]:
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
        )
        for d in op.diagnoses
    ]


class Results:
    """A pytest plugin object: one per session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.scenarios: list[ScenarioResult] = []
        self.cases: list[CaseResult] = []

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
                self.scenarios.append(scenario_result(item.nodeid, trial, report.outcome, op))
                self.cases += case_results(item.nodeid, trial, op)
                self._keep_cases(item.nodeid, trial, op)
        return report

    def _keep_cases(self, nodeid: str, trial: int, op: Operator) -> None:
        """Each diagnosed case as JSON under .run/cases/, for debugging and as test data."""
        written = set()
        for d in op.diagnoses:
            if id(d.case) in written:
                continue
            written.add(id(d.case))
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::")[-1])
            path = self.config.rootpath / ".run" / "cases" / f"{name}-trial{trial}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(case_to_json(d.case) + "\n")

    def json_path(self) -> Path:
        return self.config.rootpath / ".run" / "accuracy.json"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.scenarios:
            return
        tr = terminalreporter
        tr.write_sep("=", "operator: scenarios")
        for s in self.scenarios:
            ttd = "-" if s.time_to_detect is None else f"{s.time_to_detect:.2f} s"
            ranks = " ".join(f"{e}:{r if r is not None else '-'}" for e, r in s.ranks) or "-"
            name = s.scenario.split("::")[-1]
            tr.write_line(
                f"{s.outcome:<7} {name:<60} detected={s.detected or 'nothing'}"
                f" ttd={ttd} rank={ranks}"
            )
        if self.cases:
            tr.write_sep("=", "operator: diagnosis accuracy")
            for line in table(summarize(self.cases)):
                tr.write_line(line)
            from pytest_operator.plugin import SKIPPED_ENGINES

            for why in self.config.stash.get(SKIPPED_ENGINES, []):
                tr.write_line(f"not run: {why}")
            path = self.json_path()
            write_json(path, self.cases)
            tr.write_line(f"accuracy written to {path}")
        scenarios = self.config.rootpath / ".run" / "scenarios.json"
        scenarios.parent.mkdir(parents=True, exist_ok=True)
        scenarios.write_text(json.dumps([to_data(s) for s in self.scenarios], indent=2) + "\n")
