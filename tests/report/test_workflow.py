"""The nightly workflow passes actionlint (with shellcheck on its scripts), and does
what the nightly job must: run the suite with trials and every engine, keep the
report history between nights, publish the report."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.report.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def actionlint() -> str:
    local = ROOT / ".bin" / "actionlint"
    found = shutil.which("actionlint") or (str(local) if local.is_file() else None)
    if found is None:
        if shutil.which("go") is None:
            pytest.skip(
                "actionlint is not installed and Go, which ./dev installs it with, is absent"
            )
        pytest.fail("actionlint is not installed: run ./dev setup (go install into .bin)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_nightly_workflow_passes_actionlint() -> None:
    proc = lint(WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint is real: the same workflow with a bad expression and a shell bug fails."""
    broken = WORKFLOW.read_text().replace(
        "${{ github.run_number }}", "${{ github.no_such_context }}", 1
    )
    broken = broken.replace("previous=(--previous .nightly/history)", "previous=$(ls *.jsonl)")
    wf = tmp_path / ".github" / "workflows" / "nightly.yml"
    wf.parent.mkdir(parents=True)
    wf.write_text(broken)
    proc = lint(wf)
    assert proc.returncode == 1
    assert "no_such_context" in proc.stdout
    if shutil.which("shellcheck"):
        assert "shellcheck reported issue" in proc.stdout


def test_nightly_runs_the_suite_keeps_history_and_publishes() -> None:
    text = WORKFLOW.read_text()
    assert "schedule:" in text and "cron:" in text
    assert "ANTHROPIC_API_KEY: ${{ secrets.ANTHROPIC_API_KEY }}" in text
    assert "./dev scenarios -p no:cacheprovider --trials 3 --diagnoser=all" in text
    assert "--alluredir=allure-results" in text
    assert "./dev report allure-results -o allure-report" in text
    assert "uses: actions/cache/restore@v4" in text and "uses: actions/cache/save@v4" in text
    assert "--previous .nightly/history" in text
    assert "uses: actions/upload-artifact@v4" in text
