"""The ``operator`` console script.

``operator demo --subject NAME [--auto]`` starts the subject's embedded cluster and walks
through one fault, chapter by chapter: healthy traffic, a fault, its detection, its
diagnosis, the remediation (approved by a key press) and the recovery
(:mod:`pytest_operator._demo`).

``operator report RESULTS [-o OUTPUT] [--previous REPORT]`` builds the HTML report
of a run's Allure results, offline, with Allure 3 (the npm package ``allure``, which
``./dev report`` installs into the project's ``node_modules``): one self-contained
``OUTPUT/index.html`` that shows every scenario, its labels and attachments, and the
diagnosis accuracy per engine at the top (as report variables, from the accuracy
file the plugin wrote into the results). ``OUTPUT/history.jsonl`` keeps the history
of runs: give the previous report with ``--previous`` and the new one carries it on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_operator._accuracy import (
    BASELINE,
    EngineAccuracy,
    read_cases,
    summarize,
    table,
)

HISTORY_FILE = "history.jsonl"
ACCURACY_FILE = "operator-accuracy.json"  # written by _allure into the results
ALLURE_MAJOR = "3"
GENERATE_TIMEOUT_S = 600.0


class ReportError(Exception):
    """The report cannot be built; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Report:
    index: Path
    history: Path
    scenarios: int
    accuracy: tuple[EngineAccuracy, ...]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def accuracy_variables(rows: Sequence[EngineAccuracy]) -> dict[str, str]:
    """The accuracy figures as report variables, short enough to show whole at the top of
    the page (which shows eight before "show more"): the number of fault cases and
    controls, then two per engine (AC@1 and AC@3; Avg@5 and the false-positive rate on
    controls), the constant baseline last."""
    if not rows:
        return {}
    out = {"fault cases": f"{rows[0].cases} (controls {rows[0].controls})"}
    for a in rows:
        name = "baseline" if a.engine.startswith(BASELINE) else a.engine
        out[f"{name} AC@1"] = f"{_pct(a.ac1)} (AC@3 {_pct(a.ac3)})"
        out[f"{name} Avg@5"] = f"{_pct(a.avg5)} · FP {_pct(a.false_positive_rate)}"
    return out


def read_accuracy(results: Path) -> list[EngineAccuracy]:
    """The accuracy per engine, recomputed from the cases the plugin wrote."""
    path = results / ACCURACY_FILE
    if not path.is_file():
        return []
    try:
        cases = read_cases(path.read_text())
    except ValueError as exc:
        raise ReportError(f"{path}: {exc}") from exc
    return summarize(cases)


def read_categories(results: Path) -> list[dict[str, object]]:
    """``categories.json`` of the results, as Allure 3 config categories."""
    path = results / "categories.json"
    if not path.is_file():
        return []
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ReportError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(raw, list):
        raise ReportError(f"{path}: expected a JSON list of categories")
    keep = ("name", "matchedStatuses", "messageRegex", "traceRegex")
    return [{k: c[k] for k in keep if k in c} for c in raw if isinstance(c, dict) and "name" in c]


def find_allure(explicit: str | None = None) -> Path:
    """The Allure 3 CLI: ``--allure``, ``$OPERATOR_ALLURE``, the project's node_modules, PATH."""
    candidates: list[Path] = []
    for given in (explicit, os.environ.get("OPERATOR_ALLURE")):
        if given:
            path = Path(given)
            if not path.is_file():
                raise ReportError(f"Allure CLI {given}: no such file")
            return path
    for base in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[1]):
        candidates.append(base / "node_modules" / ".bin" / "allure")
    for path in candidates:
        if path.is_file():
            return path
    found = shutil.which("allure")
    if found:
        return Path(found)
    raise ReportError(
        "the Allure 3 CLI (npm package 'allure') is not installed: run ./dev report, which"
        " installs it into the project's node_modules, or pass --allure PATH"
    )


def _check_version(allure: Path) -> str:
    try:
        out = subprocess.run(
            [str(allure), "--version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ReportError(f"{allure} --version failed: {exc}") from exc
    if not out.startswith(f"{ALLURE_MAJOR}."):
        raise ReportError(f"{allure} is Allure {out or '?'}; this report needs Allure 3")
    return out


def allure_config(
    *, name: str, output: Path, history: Path, variables: dict[str, str], categories: list[object]
) -> dict[str, object]:
    return {
        "name": name,
        "output": str(output),
        "historyPath": str(history),
        "plugins": {
            "awesome": {
                "options": {
                    "singleFile": True,
                    "reportName": name,
                    "groupBy": ["story"],
                }
            }
        },
        "variables": variables,
        "categories": categories,
    }


def build_report(
    results: Path,
    output: Path,
    *,
    previous: Path | None = None,
    name: str = "Resilience report",
    allure: str | None = None,
) -> Report:
    """Build ``output/index.html`` (one file) and ``output/history.jsonl`` from ``results``."""
    if not results.is_dir():
        raise ReportError(
            f"{results}: no such results directory (run pytest --alluredir={results})"
        )
    scenarios = len(list(results.glob("*-result.json")))
    if scenarios == 0:
        raise ReportError(f"{results}: no Allure results (*-result.json) in it")
    prev_history = None
    if previous is not None:
        prev_history = previous / HISTORY_FILE
        if not prev_history.is_file():
            raise ReportError(
                f"--previous {previous}: no {HISTORY_FILE} in it (is it a report built by"
                " operator report?)"
            )
    cli = find_allure(allure)
    _check_version(cli)
    accuracy = read_accuracy(results)
    output = output.absolute()
    with tempfile.TemporaryDirectory(prefix="operator-report-") as tmp:
        work = Path(tmp)
        history = work / HISTORY_FILE
        if prev_history is not None:
            shutil.copyfile(prev_history, history)
        config = allure_config(
            name=name,
            output=output,
            history=history,
            variables=accuracy_variables(accuracy),
            categories=list(read_categories(results)),
        )
        (work / "allurerc.json").write_text(json.dumps(config, indent=2))
        cmd = [str(cli), "generate", str(results.absolute()), "--config", "allurerc.json"]
        try:
            proc = subprocess.run(
                cmd, cwd=work, capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as exc:
            raise ReportError(f"allure generate took over {GENERATE_TIMEOUT_S:.0f} s") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise ReportError(f"allure generate failed (exit {proc.returncode}): {tail}")
        index = output / "index.html"
        if not index.is_file():
            raise ReportError(f"allure generate wrote no {index}")
        output.mkdir(parents=True, exist_ok=True)
        kept = output / HISTORY_FILE
        if history.is_file():
            shutil.copyfile(history, kept)
    return Report(index=index, history=kept, scenarios=scenarios, accuracy=tuple(accuracy))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="operator", description="pytest-operator tools")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser(
        "report",
        help="build the single-file HTML report of Allure results (Allure 3, offline)",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    rep.add_argument("results", type=Path, help="the --alluredir of the pytest run")
    rep.add_argument(
        "-o", "--output", type=Path, default=Path("allure-report"), help="report directory"
    )
    rep.add_argument(
        "--previous",
        type=Path,
        default=None,
        help="a previous report directory whose history the new report carries on",
    )
    rep.add_argument("--name", default="Resilience report", help="the report's title")
    rep.add_argument("--allure", default=None, help="path of the Allure 3 CLI")
    _demo_parser(sub)
    return parser


def _demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pytest_operator import _registry
    from pytest_operator._demo import AUTO_PAUSE_S, CHAPTERS
    from pytest_operator._options import DiagnoserChoice

    demo = sub.add_parser(
        "demo",
        help="watch one fault found, diagnosed and fixed on a real cluster, chapter by chapter",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    demo.add_argument(
        "--subject",
        required=True,
        choices=sorted(_registry.installed()),
        help="the subject whose cluster the demo starts",
    )
    demo.add_argument(
        "--auto",
        action="store_true",
        help="go on after a pause instead of waiting for a key (approves the remediation)",
    )
    demo.add_argument(
        "--pause",
        type=float,
        default=AUTO_PAUSE_S,
        help="seconds --auto shows each chapter (default %(default)s)",
    )
    demo.add_argument(
        "--diagnoser",
        choices=[str(c) for c in DiagnoserChoice],
        default=str(DiagnoserChoice.CAUSAL),
        help="the diagnosis engine (default %(default)s; the first engine's diagnosis is remedied)",
    )
    demo.add_argument(
        "--plain",
        action="store_true",
        help="print each chapter as text instead of the live view (the default when the"
        " output is not a terminal)",
    )
    demo.add_argument(
        "--svg",
        type=Path,
        default=None,
        help="write the screen of one chapter (--svg-chapter) to this SVG file",
    )
    demo.add_argument(
        "--svg-chapter",
        type=int,
        choices=range(1, CHAPTERS + 1),
        default=5,
        metavar=f"1..{CHAPTERS}",
        help="the chapter --svg exports (default %(default)s)",
    )


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    import pytest

    from pytest_operator import _registry
    from pytest_operator._demo import run_demo
    from pytest_operator._options import ApproveLevel, Backend, DiagnoserChoice, OperatorOptions
    from pytest_operator._run import build_engines, close_engines

    if not args.pause >= 0:
        print(f"operator demo: error: --pause {args.pause}: must be >= 0", file=sys.stderr)
        return 2
    options = OperatorOptions(
        subject=args.subject,
        backend=Backend.EMBEDDED,
        nodes=3,
        observe_interval=0.25,
        diagnoser=DiagnoserChoice(args.diagnoser),
        trials=1,
        approve=ApproveLevel.NONE,  # every action waits for the person's key press
    )
    try:
        subject = _registry.load(args.subject)
        engines, _skipped = build_engines(options)
    except pytest.UsageError as exc:
        print(f"operator demo: error: {exc}", file=sys.stderr)
        return 2

    from rich.console import Console
    from rich.logging import RichHandler

    console = Console()
    # warnings (a process slow to stop) go above the live view, not across it
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
    )

    async def main() -> int:
        try:
            return await run_demo(
                subject,
                options,
                engines,
                auto=args.auto,
                pause=args.pause,
                plain=args.plain,
                svg=args.svg,
                svg_chapter=args.svg_chapter,
                console=console,
            )
        finally:
            await close_engines(engines)

    return asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "report":
        try:
            report = build_report(
                args.results,
                args.output,
                previous=args.previous,
                name=args.name,
                allure=args.allure,
            )
        except ReportError as exc:
            print(f"operator report: error: {exc}", file=sys.stderr)
            return 1
        for line in table(report.accuracy) if report.accuracy else ():
            print(line)
        print(f"report: {report.index} ({report.scenarios} results; history in {report.history})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
