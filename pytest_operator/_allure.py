"""Allure results for scenarios: labels, parameters, attachments, and run-level files.

Registered by the plugin only when allure-pytest writes results (``--alluredir``).
Each test that uses the ``operator`` fixture gets, at the end of its teardown (when
every fault has healed, so its window is known):

- labels: epic = the subject, feature = each injected fault kind ("control" when
  none), story = the scenario (the test function), severity, and tags (the faults,
  the invariants violated);
- parameters: trial and engine;
- attachments per monitor run: the timeline as JSON and as a readable table, and a
  PNG of requests per 100 ms by outcome and their latency, fault window shaded and
  detection marked; per diagnosis, its markdown; the history summary;
- per consistency check (``operator.check_history()``): the verdict as JSON and each
  anomaly's smallest failing stretch of the history as a timeline picture.

At the end of the session it writes ``categories.json`` (not detected,
misdiagnosed, harness error, subject error), ``environment.properties``,
``executor.json`` and :data:`ACCURACY_FILE` into the results directory, and the
accuracy table as a global attachment. Under pytest-xdist each worker writes its
tests' results and the controller alone writes these, once, over every worker's
cases (see :mod:`pytest_operator._results`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import time
from collections.abc import Generator, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import allure
import pytest

from pytest_operator._accuracy import (
    CaseResult,
    EngineAccuracy,
    merge_cases,
    read_cases,
    summarize,
    table,
)
from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._checkers import availability, latency
from pytest_operator._fixtures import OPERATOR
from pytest_operator._history import History, Op
from pytest_operator._linearizable import CheckResult
from pytest_operator._monitor import MonitorRun
from pytest_operator._operator import Operator
from pytest_operator._serde import to_data

log = logging.getLogger(__name__)

CONTROL = "control"
ACCURACY_FILE = "operator-accuracy.json"
"""The accuracy summary and cases, for ``operator report`` (read by no Allure reader)."""
MARKDOWN = "text/markdown"
LEAD_S = 10.0
TAIL_S = 5.0


@dataclass(frozen=True, slots=True)
class Category:
    """An Allure category: results whose status and message match fall into it."""

    name: str
    matchedStatuses: tuple[str, ...]  # Allure's field names
    messageRegex: str
    description: str


HARNESS_ERRORS = "HealError|ClusterError|ProcessError|ToxiproxyError|MissingBinaryError"
"""Exceptions of the harness itself; a 5xx inside one is the harness's, not the subject's."""
CATEGORIES = (
    Category(
        "Not detected",
        ("failed",),
        ".*not detected within.*",
        "The monitor did not confirm the expected violation in time.",
    ),
    Category(
        "Misdiagnosed",
        ("failed",),
        ".*(diagnosis named|a control run was diagnosed).*",
        "An engine did not rank the injected root cause high enough, or named a fault"
        " in a control run.",
    ),
    Category(
        "Harness error",
        ("broken", "failed"),
        f".*({HARNESS_ERRORS}).*",
        "The harness failed: cluster, processes, fault injection or healing.",
    ),
    Category(
        "Subject error",
        ("broken", "failed"),
        f"^(?!.*({HARNESS_ERRORS})).*(ActionError|HttpError|HTTPStatusError|[Ss]erver error"
        "|\\b5\\d\\d\\b).*",
        "The subject misbehaved on its own: an action failed or a node answered 5xx.",
    ),
)


def categories_json() -> str:
    return json.dumps([asdict(c) for c in CATEGORIES], indent=2)


# ---------------------------------------------------------------- per test


def scenario_faults(item: pytest.Item, op: Operator | None) -> list[str]:
    """Descriptions of the faults a test injected (or, before it ran, marked); without
    one, the causes it expected a diagnosis to name (a traffic pattern's, say)."""
    if op is not None and op.injections.injections:
        return [str(i.fault) for i in op.injections.injections]
    marked = [str(f) for m in item.iter_markers("chaos") for f in m.args]
    return marked or [str(c) for c in _expected(op)]


def _expected(op: Operator | None) -> list[RootCause]:
    out: list[RootCause] = []
    for rec in op.diagnoses if op is not None else ():
        if rec.expected is not None and rec.expected not in out:
            out.append(rec.expected)
    return out


def fault_kinds(item: pytest.Item, op: Operator | None) -> list[FaultKind]:
    """The kinds of the root causes the test injected or expected; none for a control."""
    causes = list(op.injections.root_causes()) if op is not None else []
    if not causes:
        causes = [c for m in item.iter_markers("chaos") for f in m.args for c in _root_causes(f)]
    causes += _expected(op)
    kinds: list[FaultKind] = []
    for c in causes:
        if c.kind not in kinds:
            kinds.append(c.kind)
    return kinds


def _root_causes(fault: object) -> tuple[RootCause, ...]:
    from pytest_operator._chaos import Fault

    return fault.root_causes if isinstance(fault, Fault) else ()


def _user_labels(item: pytest.Item) -> set[str]:
    """Label types the test set itself through allure's markers (never overridden)."""
    return {
        str(m.kwargs.get("label_type"))
        for m in item.iter_markers("allure_label")
        if m.kwargs.get("label_type") is not None
    }


def trial_of(item: pytest.Item) -> int:
    callspec = getattr(item, "callspec", None)
    return int(callspec.params.get("operator_trial", 1)) if callspec is not None else 1


def timeline_data(run: MonitorRun, op: Operator) -> dict[str, object]:
    return {
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "fault_at": run.fault_at,
        "until": run.until,
        "stopped_by": run.stopped_by,
        "faults": [
            {
                "fault": str(i.fault),
                "root_causes": [str(c) for c in i.fault.root_causes],
                "injected_at": i.injected_at,
                "healed_at": i.healed_at,
            }
            for i in op.injections.injections
        ],
        "observations": to_data(run.timeline.observations),
        "violations": to_data(run.timeline.violations),
        "errors": to_data(run.timeline.errors),
    }


def timeline_table(run: MonitorRun, op: Operator) -> str:
    """The run as lines a person reads: each tick's summary, with faults and violations."""
    origin = run.started_at
    rows: list[tuple[float, int, str]] = []
    for obs in run.timeline.observations:
        rows.append((obs.at, 2, obs.summary()))
    for inj in op.injections.injections:
        if inj.injected_at > 0:
            rows.append((inj.injected_at, 0, f"!! fault injected: {inj.fault}"))
        if inj.healed_at is not None and inj.healed_at <= run.ended_at:
            rows.append((inj.healed_at, 0, f"!! fault healed: {inj.fault}"))
    for v in run.violations:
        rows.append((v.first_seen, 1, f"?? {v.invariant}@{v.component} first seen"))
        rows.append((v.confirmed_at, 1, f"!! VIOLATION {v.describe()}"))
        if v.cleared_at is not None:
            rows.append((v.cleared_at, 1, f"ok {v.invariant}@{v.component} cleared"))
    for e in run.timeline.errors:
        rows.append((e.at, 1, f"xx observe failed: {e.error}"))
    rows.sort()
    header = (
        f"monitor run: {run.ended_at - run.started_at:.2f} s, stopped by {run.stopped_by}"
        f" (until={run.until or '-'}); t is seconds from its start"
    )
    lines = [header, f"{'t (s)':>8}  event / observation"]
    lines += [f"{at - origin:>8.2f}  {text}" for at, _, text in rows]
    return "\n".join(lines) + "\n"


def history_summary(ops: Sequence[Op]) -> str:
    avail = availability(ops)
    lat = latency(ops)
    o = avail.overall
    lines = [
        f"requests: {o.total} (ok {o.ok}, rejected {o.rejected}, errors {o.errors},"
        f" timeouts {o.timeouts})",
    ]
    if ops:
        first = min(op.send for op in ops)
        last = max(op.send for op in ops)
        lines.append(f"sent over {last - first:.2f} s")
    lines.append("")
    lines.append(
        f"{'target':<16} {'total':>6} {'ok':>6} {'rejected':>8} {'errors':>6} {'timeouts':>8}"
        f" {'fail %':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for target, a in [*avail.by_target.items(), ("*", o)]:
        lt = lat.overall if target == "*" else lat.by_target.get(target)
        p50, p99, top = ("-", "-", "-")
        if lt is not None and lt.count:
            p50, p99, top = (f"{lt.p50 * 1000:.1f}", f"{lt.p99 * 1000:.1f}", f"{lt.max * 1000:.1f}")
        lines.append(
            f"{target:<16} {a.total:>6} {a.ok:>6} {a.rejected:>8} {a.errors:>6} {a.timeouts:>8}"
            f" {a.failure_rate * 100:>6.1f} {p50:>7} {p99:>7} {top:>7}"
        )
    return "\n".join(lines) + "\n"


def run_plot(run: MonitorRun, op: Operator, ops: Sequence[Op], title: str) -> bytes:
    """The traffic plot of one run: from the fault or the first request (at most
    :data:`LEAD_S` before the run) to the run's end or the last request (at most
    :data:`TAIL_S` after it), so the recovery after healing shows too."""
    from pytest_operator import _plots  # matplotlib loads only when a plot is drawn

    starts = [i.injected_at for i in op.injections.injections if i.injected_at > 0]
    sends = [o.send for o in ops]
    start = max(min([run.started_at, *starts, *sends]), run.started_at - LEAD_S) - 0.1
    end = min(max([run.ended_at, *sends]), run.ended_at + TAIL_S)
    windows = [
        _plots.FaultWindow(str(i.fault), i.injected_at, i.healed_at)
        for i in op.injections.injections
        if i.injected_at > 0
    ]
    first = run.first_detection()
    data = _plots.plot_input(
        title,
        ops,
        start=start,
        end=end,
        faults=windows,
        detected_at=None if first is None else first.confirmed_at,
        detected_label="detected" if first is None else f"detected: {first.invariant}",
    )
    return _plots.render_png(data)


def _label(kind: str, *values: str) -> None:
    """Add labels to the running test's Allure result."""
    allure.dynamic.label(kind, *values)  # type: ignore[no-untyped-call]  # allure is untyped


def _history(item: pytest.Item) -> History | None:
    funcargs = getattr(item, "funcargs", None) or {}
    value = funcargs.get("history")
    return value if isinstance(value, History) else None


class AllureReporting:
    """A pytest plugin object, one per session, alive only when ``--alluredir`` is given."""

    def __init__(self, config: pytest.Config, results_dir: str | Path) -> None:
        self.config = config
        self.results_dir = Path(results_dir).absolute()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.when == "teardown" and "operator" in getattr(item, "fixturenames", ()):
            try:
                self.describe(item)
            except Exception as exc:  # a report bug must not hide or change the test's result
                log.exception("operator: allure reporting failed for %s", item.nodeid)
                allure.attach(
                    f"{type(exc).__name__}: {exc}", "operator report error", "text/plain", "txt"
                )
        return report

    def describe(self, item: pytest.Item) -> None:
        from pytest_operator.plugin import OPTIONS

        opts = self.config.stash[OPTIONS]
        op = item.stash.get(OPERATOR, None)
        user = _user_labels(item)
        kinds = fault_kinds(item, op)
        faults = scenario_faults(item, op)
        scenario = getattr(item, "originalname", item.name)
        if "epic" not in user and opts.subject:
            _label("epic", opts.subject)
        if "feature" not in user:
            _label("feature", *([k.value for k in kinds] or [CONTROL]))
        if "story" not in user:
            _label("story", scenario)
        if "severity" not in user:
            sev = "critical" if kinds else "normal"
            _label("severity", sev)
        tags = list(faults) or [CONTROL]
        if op is not None:
            tags += sorted({v.invariant for run in op.runs for v in run.violations})
        _label("tag", *tags)
        allure.dynamic.parameter("trial", trial_of(item))
        engines = [e.name for e in op.engines] if op is not None else [str(opts.diagnoser)]
        allure.dynamic.parameter("engine", ", ".join(engines))
        if op is not None:
            self.figures(item, op)
            self.attach(scenario, op, _history(item))

    def figures(self, item: pytest.Item, op: Operator) -> None:
        """Time to detect and, when the operator acted, time to recover, as parameters
        left out of Allure's history id (they change every run; the test stays one)."""
        from pytest_operator._results import scenario_result

        result = scenario_result(item.nodeid, trial_of(item), "", op)
        for name, value in (
            ("time to detect (s)", result.time_to_detect),
            ("time to recover (s)", result.time_to_recover),
        ):
            if value is not None:
                allure.dynamic.parameter(name, round(value, 2), excluded=True)

    def attach(self, scenario: str, op: Operator, history: History | None) -> None:
        ops = history.snapshot() if history is not None else ()
        for n, run in enumerate(op.runs, 1):
            suffix = f" (run {n})" if len(op.runs) > 1 else ""
            allure.attach(
                json.dumps(timeline_data(run, op), indent=1),
                f"timeline{suffix}.json",
                allure.attachment_type.JSON,
            )
            allure.attach(timeline_table(run, op), f"timeline{suffix}", allure.attachment_type.TEXT)
            if ops:
                png = run_plot(run, op, ops, f"{scenario}{suffix}")
                allure.attach(png, f"traffic and latency{suffix}", allure.attachment_type.PNG)
        for rec in op.diagnoses:
            expected = "no fault (control)" if rec.expected is None else str(rec.expected)
            rank = "-" if rec.rank is None else str(rec.rank)
            head = f"Expected: **{expected}**; rank of the expected cause: **{rank}**\n\n"
            allure.attach(
                head + rec.diagnosis.to_markdown(),
                f"diagnosis ({rec.diagnosis.engine})",
                MARKDOWN,
                "md",
            )
        if history is not None:
            allure.attach(history_summary(ops), "history summary", allure.attachment_type.TEXT)
        for n, result in enumerate(op.checks, 1):
            self.attach_check(result, f" ({n})" if len(op.checks) > 1 else "")
        for rem in op.remediations:
            recovery = next((r for r in op.recoveries if r.remediation is rem), None)
            allure.attach(rem.to_markdown(recovery), f"remediation ({rem.engine})", MARKDOWN, "md")
        if op.actions.audit:
            trail = "".join(e.to_json() + "\n" for e in op.actions.audit)
            allure.attach(trail, "audit trail.jsonl", "text/plain", "jsonl")

    def attach_check(self, result: CheckResult, suffix: str) -> None:
        """A consistency check: its verdict as JSON, and each anomaly's smallest failing
        stretch of the history as a timeline picture."""
        from pytest_operator._plots import anomaly_plot

        verdict = "valid" if result.valid else "NOT valid"
        allure.attach(
            result.to_json(),
            f"{result.model} check: {verdict}{suffix}.json",
            allure.attachment_type.JSON,
        )
        for anomaly in result.anomalies:
            allure.attach(
                anomaly_plot(anomaly),
                f"{anomaly.kind} on {anomaly.key}{suffix}",
                allure.attachment_type.PNG,
            )

    # ------------------------------------------------------------ session

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from pytest_operator._results import xdist_worker

        if xdist_worker(self.config) is not None:
            return  # the controller writes the run's files, with every worker's cases
        self.results_dir.mkdir(parents=True, exist_ok=True)
        (self.results_dir / "categories.json").write_text(categories_json() + "\n")
        (self.results_dir / "environment.properties").write_text(self.environment())
        (self.results_dir / "executor.json").write_text(
            json.dumps(executor(os.environ), indent=2) + "\n"
        )
        cases = self._cases()
        if cases:
            cases = merge_cases(self._earlier_cases(), cases)
            summary = summarize(cases)
            (self.results_dir / ACCURACY_FILE).write_text(accuracy_json(summary, cases))
            allure.global_attach(
                "\n".join(table(summary)) + "\n",
                "diagnosis accuracy",
                allure.attachment_type.TEXT,
            )

    def _earlier_cases(self) -> list[CaseResult]:
        """Cases an earlier run left in the same results (not cleaned in between): the
        scenario suites of two subjects, run one after the other into one report."""
        path = self.results_dir / ACCURACY_FILE
        if not path.is_file():
            return []
        try:
            return read_cases(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("%s: left out of the accuracy summary: %s", path, exc)
            return []

    def _earlier_subjects(self) -> list[str]:
        """The subjects an earlier run into the same results named (see _earlier_cases)."""
        path = self.results_dir / "environment.properties"
        if not path.is_file() or not (self.results_dir / ACCURACY_FILE).is_file():
            return []
        for line in path.read_text().splitlines():
            if line.startswith("subject="):
                return [s.strip() for s in line.removeprefix("subject=").split(",")]
        return []

    def _cases(self) -> list[CaseResult]:
        from pytest_operator._results import Results

        results = self.config.pluginmanager.get_plugin("operator-results")
        return list(results.cases) if isinstance(results, Results) else []

    def environment(self) -> str:
        from pytest_operator.plugin import ENGINES, OPTIONS, SKIPPED_ENGINES

        opts = self.config.stash[OPTIONS]
        engines = [e.name for e in self.config.stash.get(ENGINES, [])]
        left_out = self.config.stash.get(SKIPPED_ENGINES, [])
        subjects = [*self._earlier_subjects(), opts.subject or "-"]
        entries = [
            ("subject", ", ".join(dict.fromkeys(s for s in subjects if s != "-")) or "-"),
            ("backend", str(opts.backend)),
            ("nodes", str(opts.nodes)),
            ("engines", ", ".join(engines) or str(opts.diagnoser)),
            *([("engines.left.out", "; ".join(left_out))] if left_out else []),
            ("trials", str(opts.trials)),
            ("observe.interval.s", str(opts.observe_interval)),
            ("python", platform.python_version()),
            ("platform", platform.platform()),
            *versions(("pytest-operator", "pytest", "allure-pytest", "matplotlib", "anthropic")),
        ]
        return properties(entries)


def versions(distributions: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for name in distributions:
        try:
            out.append((f"version.{name}", metadata.version(name)))
        except metadata.PackageNotFoundError:
            continue
    return out


def properties(entries: Iterable[tuple[str, str]]) -> str:
    """Java properties text (keys and values escaped)."""

    def esc(text: str, key: bool) -> str:
        out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=")
        out = out.replace(":", "\\:")
        return out.replace(" ", "\\ ") if key else out

    return "".join(f"{esc(k, True)}={esc(v, False)}\n" for k, v in entries)


def executor(env: os._Environ[str] | dict[str, str]) -> dict[str, str | int]:
    """Who ran the tests: a GitHub Actions run when its variables are set, else this host."""
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID"):
        url = f"{env.get('GITHUB_SERVER_URL', '')}/{env.get('GITHUB_REPOSITORY', '')}"
        run_url = f"{url}/actions/runs/{env['GITHUB_RUN_ID']}"
        return {
            "name": "GitHub Actions",
            "type": "github",
            "buildName": f"{env.get('GITHUB_WORKFLOW', 'workflow')}"
            f" #{env.get('GITHUB_RUN_NUMBER', '?')}",
            "buildOrder": int(env.get("GITHUB_RUN_NUMBER", "0") or 0),
            "buildUrl": run_url,
            "reportUrl": run_url,
        }
    return {
        "name": socket.gethostname(),
        "type": "local",
        "buildName": f"local run {time.strftime('%Y-%m-%d %H:%M:%S')}",
    }


def accuracy_json(summary: Sequence[EngineAccuracy], cases: Sequence[CaseResult]) -> str:
    doc = {"summary": [asdict(a) for a in summary], "cases": [asdict(c) for c in cases]}
    return json.dumps(doc, indent=2) + "\n"
