"""Time to recover beside time to detect: per engine, the share of the fault cases it
diagnosed that the operator acted on and that recovered, and the median time to
recover, in the accuracy table and JSON; per scenario, ``ttr=`` on its summary line. One
real run (a pytest subprocess on an embedded cluster) checks the whole path."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_operator._accuracy import (
    CaseResult,
    EngineAccuracy,
    read_cases,
    summarize,
    table,
    write_json,
)
from pytest_operator._remediation import Remediation, Step
from pytest_operator._results import acted
from tests.plugin.test_xdist import xdist_free_env
from tests.report.conftest import INI, run_group


def case(
    scenario: str,
    *,
    engine: str = "causal",
    remediated: bool = False,
    ttr: float | None = None,
    expected: str | None = "crash(node-1)",
) -> CaseResult:
    return CaseResult(
        scenario,
        1,
        engine,
        expected,
        ("crash(node-1)",),
        1 if expected else None,
        0.5,
        0.001,
        remediated=remediated,
        time_to_recover=ttr,
    )


def test_share_recovered_and_median_count_only_remediated_fault_cases() -> None:
    results = [
        case("a", remediated=True, ttr=1.0),
        case("b", remediated=True, ttr=3.0),
        case("c", remediated=True, ttr=None),  # acted on, never recovered
        case("d", remediated=True, ttr=2.0),
        case("e"),  # diagnosed only: not in the recovery figures
        case("f", expected=None),  # a control
        case("a", engine="claude"),
    ]
    rows = {a.engine: a for a in summarize(results)}
    causal = rows["causal"]
    assert (causal.cases, causal.remediated, causal.recovered) == (5, 4, 0.75)
    assert causal.median_time_to_recover == 2.0
    claude = rows["claude"]
    assert (claude.remediated, claude.recovered, claude.median_time_to_recover) == (0, None, None)
    base = next(a for a in rows.values() if a.engine.startswith("constant-baseline"))
    assert (base.remediated, base.recovered, base.median_time_to_recover) == (0, None, None)


def test_table_shows_recovery_beside_detection_and_diagnosis() -> None:
    rows = summarize([case("a", remediated=True, ttr=1.25), case("b", remediated=True)])
    lines = table(rows)
    assert lines[0].split()[-3:] == ["remediated", "recovered", "recover"]
    causal = next(line for line in lines if line.startswith("causal"))
    assert causal.split()[-4:] == ["2", "50%", "1.25", "s"]
    base = next(line for line in lines if line.startswith("constant-baseline"))
    assert base.split()[-3:] == ["0", "-", "-"]


def test_json_keeps_the_recovery_fields_and_reads_older_files(tmp_path: Path) -> None:
    path = tmp_path / "accuracy.json"
    results = [case("a", remediated=True, ttr=1.5)]
    write_json(path, results)
    doc = json.loads(path.read_text())
    (causal,) = [s for s in doc["summary"] if s["engine"] == "causal"]
    assert (causal["remediated"], causal["recovered"], causal["median_time_to_recover"]) == (
        1,
        1.0,
        1.5,
    )
    assert read_cases(path.read_text()) == results
    assert EngineAccuracy.from_dict(causal) == summarize(results)[0]
    # a file written before recovery was measured: no such fields, read as none remediated
    new = ("remediated", "recovered", "median_time_to_recover")
    old_row = {k: v for k, v in causal.items() if k not in new}
    old = EngineAccuracy.from_dict(old_row)
    assert (old.remediated, old.recovered, old.median_time_to_recover) == (0, None, None)
    old_case = {k: v for k, v in doc["cases"][0].items()}
    del old_case["remediated"], old_case["time_to_recover"]
    (read,) = read_cases(json.dumps({"cases": [old_case]}))
    assert (read.remediated, read.time_to_recover) == (False, None)
    with pytest.raises(ValueError, match="not a number"):
        EngineAccuracy.from_dict({**causal, "median_time_to_recover": "soon"})


def test_only_a_remediation_that_ran_something_counts_as_acting() -> None:
    def remediation(*outcomes: str) -> Remediation:
        steps = tuple(
            Step("restart_node", (("node", "node-1"),), o, "", 1, 0.0, 1.0) for o in outcomes
        )
        return Remediation("causal", "crash(node-1)", steps)

    assert acted(remediation("ok")) and acted(remediation("failed"))
    assert acted(remediation("ok", "refused")) and acted(remediation("unverified"))
    assert not acted(remediation("dry-run")) and not acted(remediation("refused"))
    assert not acted(remediation())


SCENARIOS = """\
import pytest
from pytest_operator import Action, FaultKind, kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


async def approve_restarts(action: Action, args: object) -> bool:
    return FaultKind.CRASH in action.remedies


async def test_remedied(operator, chaos, workload):
    await workload.start(steady(rate=50), keys="k1")
    await chaos.leave(kill("node-1"))
    run = await operator.monitor(until="node_down", timeout=15)
    await operator.assert_diagnosis(run)
    operator.actions.approver = approve_restarts
    remediation = await operator.remediate(run)
    await operator.assert_recovered(remediation, within=20.0, sustain=2.0)


@pytest.mark.chaos(kill("node-2"))
async def test_diagnosed_only(operator, workload):
    await workload.start(steady(rate=50), keys="k1")
    run = await operator.monitor(until="node_down", timeout=15)
    await operator.assert_diagnosis(run)
"""


@pytest.mark.slow
def test_a_real_run_reports_time_to_recover(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_recover.py").write_text(textwrap.dedent(SCENARIOS))
    env = xdist_free_env()
    env["PYTEST_OPERATOR_RUN_DIR"] = str(tmp_path / "clusters")
    allure_dir = tmp_path / "allure"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_recover.py"]
    cmd += [f"--alluredir={allure_dir}"]
    proc = run_group(cmd, cwd=tmp_path, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "2 passed" in out, out[-3000:]
    lines = out.splitlines()
    remedied = next(line for line in lines if re.match(r"passed +test_remedied\b", line))
    found = re.search(r" ttd=[\d.]+ s rank=causal:1 ttr=([\d.]+) s$", remedied)
    assert found, remedied
    ttr = float(found.group(1))
    assert 0 < ttr <= 20.0
    only = next(line for line in lines if re.match(r"passed +test_diagnosed_only\b", line))
    assert only.endswith("rank=causal:1"), only  # no remediation: no ttr
    assert re.search(r"^causal +2 +100% .* 1 +100% +[\d.]+ s$", out, re.MULTILINE), out[-3000:]

    accuracy = json.loads((tmp_path / ".run" / "accuracy.json").read_text())
    (causal,) = [s for s in accuracy["summary"] if s["engine"] == "causal"]
    assert (causal["cases"], causal["remediated"], causal["recovered"]) == (2, 1, 1.0)
    assert causal["median_time_to_recover"] == pytest.approx(ttr, abs=0.01)
    by_test = {c["scenario"].split("::")[-1]: c for c in accuracy["cases"]}
    assert by_test["test_remedied"]["remediated"] is True
    assert by_test["test_remedied"]["time_to_recover"] == pytest.approx(ttr, abs=0.01)
    assert (
        by_test["test_diagnosed_only"]["remediated"],
        by_test["test_diagnosed_only"]["time_to_recover"],
    ) == (False, None)
    scenarios = json.loads((tmp_path / ".run" / "scenarios.json").read_text())
    assert [(s["remediated"], s["time_to_recover"] is not None) for s in scenarios] == [
        (True, True),
        (False, False),
    ]

    results = [json.loads(p.read_text()) for p in allure_dir.glob("*-result.json")]
    (allured,) = [r for r in results if r["name"] == "test_remedied"]
    params = {p["name"]: p for p in allured["parameters"]}
    assert float(params["time to recover (s)"]["value"]) == pytest.approx(ttr, abs=0.01)
    assert params["time to recover (s)"]["excluded"] is True  # not part of the history id
    assert float(params["time to detect (s)"]["value"]) > 0
    (rem,) = [a for a in allured["attachments"] if a["name"] == "remediation (causal)"]
    text = (allure_dir / rem["source"]).read_text()
    assert "`restart_node(node=node-1)` | approved | approve_restarts | ok | 1 |" in text, text
    assert f"**Recovered** {ttr:.2f} s after the first action" in text, text
    (only,) = [r for r in results if r["name"] == "test_diagnosed_only"]
    assert "time to recover (s)" not in {p["name"] for p in only["parameters"]}
