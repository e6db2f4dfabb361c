"""Allure results of a real scenario run (a pytest subprocess with --alluredir against
a real embedded cluster): labels, parameters, attachments and their MIME types, and
the run-level files; plus the pure helpers on real messages and hand-built data."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from pytest_operator._allure import (
    ACCURACY_FILE,
    CATEGORIES,
    executor,
    history_summary,
    properties,
)
from pytest_operator._history import Op, Outcome
from tests.report.conftest import INI, TRIALS, ScenarioRun

KILL = "test_killed_node_is_diagnosed"
MISSED = "test_detection_deadline_missed"
CONTROL = "test_quiet_control"
OVERLOAD = "test_overload_expected_but_not_seen"


def results_of(run: ScenarioRun) -> list[dict[str, Any]]:
    files = sorted(run.results.glob("*-result.json"))
    return [json.loads(f.read_text()) for f in files]


def by_story(run: ScenarioRun, story: str) -> list[dict[str, Any]]:
    return [r for r in results_of(run) if labels(r, "story") == [story]]


def labels(result: dict[str, Any], name: str) -> list[str]:
    return [lab["value"] for lab in result["labels"] if lab["name"] == name]


def params(result: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in result.get("parameters", [])}


def attachments(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {a["name"]: (a["type"], a["source"]) for a in result.get("attachments", [])}


@pytest.fixture(scope="module")
def run(scenario_run: ScenarioRun) -> Iterator[ScenarioRun]:
    assert scenario_run.returncode == 1, scenario_run.stdout[-3000:]  # the missed deadline
    assert "4 failed, 4 passed" in scenario_run.stdout, scenario_run.stdout[-3000:]
    yield scenario_run


pytestmark = pytest.mark.slow


def test_every_scenario_trial_has_labels(run: ScenarioRun) -> None:
    results = results_of(run)
    assert len(results) == 4 * TRIALS
    expected = {
        KILL: ("crash", "critical"),
        MISSED: ("crash", "critical"),
        CONTROL: ("control", "normal"),
        OVERLOAD: ("overload", "critical"),  # no fault injected: the expected cause's kind
    }
    for story, (feature, severity) in expected.items():
        trials = by_story(run, story)
        assert len(trials) == TRIALS
        for r in trials:
            assert labels(r, "epic") == ["ratelimiter"]
            assert labels(r, "feature") == [feature]
            assert labels(r, "severity") == [severity]
    kill_tags = labels(by_story(run, KILL)[0], "tag")
    assert "kill(node-1)" in kill_tags and "node_down" in kill_tags
    assert "control" in labels(by_story(run, CONTROL)[0], "tag")
    assert "overload(client)" in labels(by_story(run, OVERLOAD)[0], "tag")


def test_trial_and_engine_parameters(run: ScenarioRun) -> None:
    for story in (KILL, MISSED, CONTROL, OVERLOAD):
        ps = [params(r) for r in by_story(run, story)]
        assert sorted(p["trial"] for p in ps) == [str(i) for i in range(1, TRIALS + 1)]
        assert {p["engine"] for p in ps} == {"'causal'"}  # allure quotes string values


def test_attachments_and_their_types(run: ScenarioRun) -> None:
    for r in by_story(run, KILL):
        att = attachments(r)
        assert {name: mime for name, (mime, _) in att.items()} == {
            "timeline.json": "application/json",
            "timeline": "text/plain",
            "traffic and latency": "image/png",
            "diagnosis (causal)": "text/markdown",
            "history summary": "text/plain",
        }
        files = {name: run.results / src for name, (_, src) in att.items()}
        timeline = json.loads(files["timeline.json"].read_text())
        assert timeline["stopped_by"] == "node_down"
        assert [f["fault"] for f in timeline["faults"]] == ["kill(node-1)"]
        assert timeline["faults"][0]["healed_at"] is not None  # attached after the heal
        assert any(v["invariant"] == "node_down" for v in timeline["violations"])
        table = files["timeline"].read_text()
        assert "!! fault injected: kill(node-1)" in table
        assert "!! VIOLATION node_down@node-1" in table
        diagnosis = files["diagnosis (causal)"].read_text()
        assert diagnosis.startswith(
            "Expected: **crash(node-1)**; rank of the expected cause: **1**"
        )
        assert "### 1. crash(node-1)" in diagnosis
        assert files["history summary"].read_text().startswith("requests: ")
        png = Image.open(io.BytesIO(files["traffic and latency"].read_bytes()))
        assert png.format == "PNG" and png.size == (1200, 700)
    # a failed scenario gets its evidence too; a control's diagnosis says "no fault"
    assert "traffic and latency" in attachments(by_story(run, MISSED)[0])
    (_, src) = attachments(by_story(run, CONTROL)[0])["diagnosis (causal)"]
    assert "No fault" in (run.results / src).read_text()


def test_failures_fall_in_their_categories(run: ScenarioRun) -> None:
    written = json.loads((run.results / "categories.json").read_text())
    assert [c["name"] for c in written] == [
        "Not detected",
        "Misdiagnosed",
        "Harness error",
        "Subject error",
    ]
    for story, category in ((MISSED, "Not detected"), (OVERLOAD, "Misdiagnosed")):
        for r in by_story(run, story):
            message = r["statusDetails"]["message"]
            matched = [
                c["name"]
                for c in written
                if r["status"] in c["matchedStatuses"] and re.search(c["messageRegex"], message)
            ]
            assert matched == [category], message


def test_environment_executor_and_accuracy_files(run: ScenarioRun) -> None:
    env = (run.results / "environment.properties").read_text().splitlines()
    assert "subject=ratelimiter" in env
    assert "backend=embedded" in env
    assert "nodes=3" in env
    assert "engines=causal" in env
    assert f"trials={TRIALS}" in env
    assert any(line.startswith("version.pytest-operator=") for line in env)
    assert any(line.startswith("version.allure-pytest=") for line in env)
    ex = json.loads((run.results / "executor.json").read_text())
    assert ex["type"] == "local" and ex["buildName"].startswith("local run ")
    acc = json.loads((run.results / ACCURACY_FILE).read_text())
    causal = [a for a in acc["summary"] if a["engine"] == "causal"]
    assert causal and causal[0]["cases"] == 2 * TRIALS and causal[0]["controls"] == TRIALS
    globals_ = [json.loads(p.read_text()) for p in run.results.glob("*-globals.json")]
    names = [a["name"] for g in globals_ for a in g.get("attachments", [])]
    assert names == ["diagnosis accuracy"]


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("message", "category"),
    [
        (
            "pytest_operator._monitor.NotDetected: counter_drift not detected within 3.0 s:"
            " detected after 4.12 s (counter_drift@node-2: drift 12)",
            "Not detected",
        ),
        (
            "pytest_operator._operator.Misdiagnosed: causal: diagnosis named latency(node-1 <->"
            " redis); expected partition(node-2 <-> redis); ranked 3rd",
            "Misdiagnosed",
        ),
        (
            "pytest_operator._operator.Misdiagnosed: a control run was diagnosed with a fault:"
            " causal named overload(client) (60%)",
            "Misdiagnosed",
        ),
        ("pytest_operator._chaos.HealError: could not heal kill(node-1): ...", "Harness error"),
        ("pytest_operator._cluster.ClusterError: redis did not start in 10 s", "Harness error"),
        ("pytest_operator._toxiproxy.ToxiproxyError: POST /proxies: 500", "Harness error"),
        ("pytest_operator._actions.ActionError: limit=0: must be >= 1", "Subject error"),
        ("httpx.HTTPStatusError: Server error '503 Service Unavailable'", "Subject error"),
    ],
)
def test_category_regexes_match_real_messages(message: str, category: str) -> None:
    matched = [c.name for c in CATEGORIES if re.search(c.messageRegex, message)]
    assert matched == [category]


def test_properties_escape_keys_and_values() -> None:
    text = properties([("a key", "x=1: y"), ("path", "C:\\tmp\nnext")])
    assert text == "a\\ key=x\\=1\\: y\npath=C\\:\\\\tmp\\nnext\n"


def test_executor_names_the_github_run() -> None:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_NUMBER": "7",
        "GITHUB_WORKFLOW": "nightly resilience",
        "GITHUB_SERVER_URL": "https://example.test",
        "GITHUB_REPOSITORY": "org/repo",
    }
    assert executor(env) == {
        "name": "GitHub Actions",
        "type": "github",
        "buildName": "nightly resilience #7",
        "buildOrder": 7,
        "buildUrl": "https://example.test/org/repo/actions/runs/42",
        "reportUrl": "https://example.test/org/repo/actions/runs/42",
    }


def test_history_summary_counts_per_target() -> None:
    ops = [
        Op(0, "node-1", "k", 10.0, 10.0, 10.002, Outcome.OK),
        Op(1, "node-1", "k", 10.1, 10.1, 10.104, Outcome.REJECTED),
        Op(2, "node-2", "k", 10.2, 10.2, None, Outcome.TIMEOUT),
        Op(3, "node-2", "k", 10.3, 10.3, 10.3001, Outcome.ERROR),
    ]
    lines = history_summary(ops).splitlines()
    assert lines[0] == "requests: 4 (ok 1, rejected 1, errors 1, timeouts 1)"
    assert lines[1] == "sent over 0.30 s"
    row = {line.split()[0]: line.split()[1:] for line in lines[4:]}
    assert row["node-1"][:6] == ["2", "1", "1", "0", "0", "0.0"]
    assert row["node-2"][:6] == ["2", "0", "0", "1", "1", "100.0"]
    assert row["node-2"][6:] == ["-", "-", "-"]  # nothing answered: no latency
    assert row["*"][:6] == ["4", "1", "1", "1", "1", "50.0"]


def test_reporting_is_off_without_alluredir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --alluredir the reporting object is not registered at all."""
    pytester.makeini(INI)
    pytester.makepyfile(
        test_x="def test_x(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.get_plugin('operator-allure') is None\n"
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.makepyfile(
        test_x="def test_x(pytestconfig):\n"
        "    assert pytestconfig.pluginmanager.get_plugin('operator-allure') is not None\n"
    )
    out = pytester.path / "results"
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = pytester.runpytest("-p", "no:cacheprovider", "--diagnoser=all", f"--alluredir={out}")
    result.assert_outcomes(passed=1)
    assert (out / "categories.json").is_file()
    env = (out / "environment.properties").read_text().splitlines()
    assert "engines=causal" in env  # the engines that ran, not the option's word
    assert any(line.startswith("engines.left.out=claude") for line in env), env
