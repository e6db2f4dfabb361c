"""The report in a real browser: headless Chromium opens the single-file report; the
page, once its scripts ran, shows every scenario and the accuracy figures; a
screenshot is kept under the test's tmp dir."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from pytest_operator._cli import accuracy_variables, build_report, read_accuracy
from tests.report.conftest import ScenarioRun, allure_cli, run_group, tool

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
STORIES = (
    "test_killed_node_is_diagnosed",
    "test_detection_deadline_missed",
    "test_quiet_control",
    "test_overload_expected_but_not_seen",
)


def chromium(tmp: Path, url: str, *args: str, budget_ms: int) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    return run_group(
        [
            tool("chromium", install="run ./dev setup (apt-get install chromium)"),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
            url,
        ],
        timeout=180,
    )


def page_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_report_shows_scenarios_and_accuracy(scenario_run: ScenarioRun, tmp_path: Path) -> None:
    allure_cli()
    report = build_report(scenario_run.results, tmp_path / "report", name="Browser test")
    url = report.index.as_uri()
    wanted = [*STORIES]
    for name, value in accuracy_variables(read_accuracy(scenario_run.results)).items():
        wanted += [name, value]
    # the page renders from scripts; give a loaded machine more virtual time on a retry
    text = ""
    budget = 10_000
    for budget in (10_000, 30_000):
        proc = chromium(tmp_path, url, "--dump-dom", budget_ms=budget)
        assert proc.returncode == 0, proc.stderr[-2000:]
        text = page_text(proc.stdout)
        if all(w in text for w in wanted):
            break
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not on the page: {missing}; page text: {text[:2000]}"
    assert "Browser test" in text

    # The screenshot, from the budget that rendered the page; a page still showing only
    # its loading spinner is nearly all background colour, so retry it with more time.
    shot = tmp_path / "report.png"
    background = 1.0
    for shot_budget in (budget, 30_000, 60_000):
        proc = chromium(tmp_path, url, f"--screenshot={shot}", budget_ms=shot_budget)
        assert proc.returncode == 0, proc.stderr[-2000:]
        img = Image.open(shot)
        assert img.size == (1400, 1000)
        colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None
        background = max(colours)[0] / (1400 * 1000)
        if background < 0.95:
            break
    assert background < 0.95, (
        f"the screenshot shows an unrendered page ({background:.1%} one colour)"
    )
