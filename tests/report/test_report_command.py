"""``operator report``: one self-contained HTML file from real Allure results, history
carried on from a previous report, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_operator._accuracy import EngineAccuracy
from pytest_operator._cli import (
    ACCURACY_FILE,
    HISTORY_FILE,
    accuracy_variables,
    build_report,
    main,
    read_accuracy,
)
from tests.report.conftest import ScenarioRun, allure_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_report(scenario_run: ScenarioRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    allure_cli()
    out = tmp_path_factory.mktemp("report") / "first"
    report = build_report(scenario_run.results, out, name="Report test")
    assert report.index == out / "index.html"
    return out


def test_report_is_one_self_contained_html_file(first_report: Path) -> None:
    files = sorted(p.name for p in first_report.iterdir())
    assert "index.html" in files and HISTORY_FILE in files
    assert not [f for f in files if f.endswith((".js", ".css", ".woff", ".woff2", ".png"))]
    assert not [p for p in first_report.iterdir() if p.is_dir()]
    html = (first_report / "index.html").read_text()
    assert "<script src=" not in html.replace('<script src="data:', "")
    assert "Report test" in html
    assert len((first_report / HISTORY_FILE).read_text().splitlines()) == 1


def test_second_build_keeps_the_history(
    scenario_run: ScenarioRun, first_report: Path, tmp_path: Path
) -> None:
    first = json.loads((first_report / HISTORY_FILE).read_text().splitlines()[0])
    out = tmp_path / "second"
    build_report(scenario_run.results, out, previous=first_report, name="Report test")
    runs = [json.loads(line) for line in (out / HISTORY_FILE).read_text().splitlines()]
    assert runs[0]["uuid"] == first["uuid"]
    assert len(runs) == 2 and runs[1]["uuid"] != first["uuid"]
    # the new page embeds the earlier run
    assert first["uuid"] in (out / "index.html").read_text()


def test_console_script_builds_and_prints_the_accuracy(
    scenario_run: ScenarioRun, tmp_path: Path
) -> None:
    allure_cli()
    script = Path(sys.executable).parent / "operator"
    out = tmp_path / "r"
    proc = subprocess.run(
        [str(script), "report", str(scenario_run.results), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["engine", "cases", "AC@1"]
    assert lines[1].split()[0] == "causal"
    assert lines[-1].startswith(f"report: {out / 'index.html'} (8 results;")
    assert (out / "index.html").is_file()


def test_accuracy_variables_come_from_the_run(scenario_run: ScenarioRun) -> None:
    rows = read_accuracy(scenario_run.results)
    written = json.loads((scenario_run.results / ACCURACY_FILE).read_text())["summary"]
    assert [r.engine for r in rows] == [w["engine"] for w in written]
    causal = next(w for w in written if w["engine"] == "causal")
    base = next(w for w in written if w["engine"].startswith("constant-baseline ("))
    assert accuracy_variables(rows) == {
        "fault cases": f"{causal['cases']} (controls {causal['controls']})",
        "causal AC@1": f"{causal['ac1']:.0%} (AC@3 {causal['ac3']:.0%})",
        "causal Avg@5": f"{causal['avg5']:.0%} · FP {causal['false_positive_rate']:.0%}",
        "baseline AC@1": f"{base['ac1']:.0%} (AC@3 {base['ac3']:.0%})",
        "baseline Avg@5": f"{base['avg5']:.0%} · FP {base['false_positive_rate']:.0%}",
    }


def test_accuracy_variables_without_controls() -> None:
    rows = [
        EngineAccuracy("causal", 4, 0.75, 1.0, 0.95, 0, None, 0.001),
        EngineAccuracy("claude", 4, 0.5, 0.75, 0.7, 0, None, 2.5),
    ]
    assert accuracy_variables(rows) == {
        "fault cases": "4 (controls 0)",
        "causal AC@1": "75% (AC@3 100%)",
        "causal Avg@5": "95% · FP -",
        "claude AC@1": "50% (AC@3 75%)",
        "claude Avg@5": "70% · FP -",
    }
    assert accuracy_variables([]) == {}


def test_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["report", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"operator report: error: {missing}: no such results directory"
        f" (run pytest --alluredir={missing})\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 1
    assert capsys.readouterr().err == (
        f"operator report: error: {empty}: no Allure results (*-result.json) in it\n"
    )
    (empty / "x-result.json").write_text("{}")
    assert main(["report", str(empty), "--previous", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"operator report: error: --previous {tmp_path}: no {HISTORY_FILE} in it"
        " (is it a report built by operator report?)\n"
    )
    assert main(["report", str(empty), "--allure", str(tmp_path / "allure")]) == 1
    assert capsys.readouterr().err == (
        f"operator report: error: Allure CLI {tmp_path / 'allure'}: no such file\n"
    )
    (empty / ACCURACY_FILE).write_text('{"cases": [{"scenario": "x"}]}')
    assert main(["report", str(empty)]) == 1
    assert capsys.readouterr().err == (
        f"operator report: error: {empty / ACCURACY_FILE}: not an accuracy file of"
        " pytest-operator (no 'ranked')\n"
    )
