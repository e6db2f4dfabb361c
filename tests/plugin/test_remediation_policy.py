"""The remediation policy end to end: shown in the report header, applied to a real
cluster's operator (dry-run runs nothing, no approver and no terminal refuses, a kill
switch flipped mid-test stops the next action), and each test's audit trail written as
JSON lines to its file and attached to Allure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugin.conftest import BASE_INI

INI = BASE_INI + "asyncio_mode = auto\nasyncio_default_test_loop_scope = session\n"
INI = INI.replace(
    "asyncio_default_fixture_loop_scope = function", "asyncio_default_fixture_loop_scope = session"
)

PASSING = "def test_ok():\n    assert True\n"


def test_the_policy_is_the_headers_second_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        [
            "operator: subject=(from markers) cluster=embedded nodes=3"
            " observe-interval=0.25s diagnoser=causal trials=1",
            "operator: remediation approve=medium (asked above medium: the approver, else a"
            " terminal prompt, else refused) dry-run=off kill-switch=none audit=.run/audit",
        ]
    )
    result = pytester.runpytest(
        "--operator-approve=none",
        "--operator-dry-run",
        "--operator-kill-switch=env:STOP_OPERATOR",
        "--operator-audit-dir=/tmp/audit",
    )
    result.stdout.fnmatch_lines(
        [
            "operator: remediation approve=none (asked every action: the approver, else a"
            " terminal prompt, else refused) dry-run=on kill-switch=env:STOP_OPERATOR"
            " audit=/tmp/audit",
        ]
    )


SCENARIOS = """
import pytest
from pytest_operator import kill, steady

pytestmark = pytest.mark.subject("ratelimiter")

async def diagnosed_crash(operator, chaos, workload, node):
    await workload.start(steady(rate=50), keys="k1")
    await chaos.leave(kill(node))
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", component=node)
    return run

async def test_dry_run(operator, chaos, workload):
    run = await diagnosed_crash(operator, chaos, workload, "node-1")
    remediation = await operator.remediate(run)
    assert [(s.action, s.outcome) for s in remediation.steps] == [("restart_node", "dry-run")]
    again = await operator.monitor(until="node_down", timeout=5, settle=0.1)
    assert again.first("node_down", "node-1") is not None  # nothing restarted it

async def test_no_approver(operator, chaos, workload):
    run = await diagnosed_crash(operator, chaos, workload, "node-2")
    remediation = await operator.remediate(run)
    assert [(s.action, s.outcome) for s in remediation.steps] == [("restart_node", "refused")]
    assert operator.actions.audit[-1].decision == "no approver"

async def test_kill_switch(operator, chaos, workload):
    async def yes(action, args):
        return True

    operator.actions.approver = yes
    run = await diagnosed_crash(operator, chaos, workload, "node-3")
    open(SWITCH, "w").close()  # a person flips it
    remediation = await operator.remediate(run)
    assert [(s.action, s.outcome) for s in remediation.steps] == [("restart_node", "refused")]
    assert operator.actions.audit[-1].decision == "kill switch"
"""


@pytest.mark.slow
def test_policy_on_a_real_cluster_is_audited_per_test(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makeini(INI)
    switch = tmp_path / "stop"
    pytester.makepyfile(test_remedy=SCENARIOS.replace("SWITCH", repr(str(switch))))
    audit = tmp_path / "audit"
    allure_dir = tmp_path / "allure"
    common = ("-p", "no:cacheprovider", f"--operator-audit-dir={audit}")
    result = pytester.runpytest_subprocess(
        *common, "--operator-dry-run", "-k", "dry_run", f"--alluredir={allure_dir}"
    )
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess(
        *common, f"--operator-kill-switch=file:{switch}", "-k", "not dry_run"
    )
    result.assert_outcomes(passed=2)

    def trail(test: str) -> list[dict[str, object]]:
        text = (audit / f"test_remedy.py.{test}.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    expected = {
        "test_dry_run": ("node-1", "dry-run", "dry-run"),
        "test_no_approver": ("node-2", "no approver", "refused"),
        "test_kill_switch": ("node-3", "kill switch", "refused"),
    }
    for test, (node, decision, outcome) in expected.items():
        [row] = trail(test)
        assert (row["action"], row["args"], row["risk"]) == ("restart_node", {"node": node}, "high")
        assert (row["decision"], row["outcome"], row["approved_by"]) == (decision, outcome, None)

    attached = [
        a
        for f in allure_dir.glob("*-result.json")
        for a in json.loads(f.read_text()).get("attachments", [])
        if a["name"] == "audit trail.jsonl"
    ]
    assert len(attached) == 1
    body = (allure_dir / attached[0]["source"]).read_text()
    assert [json.loads(line)["decision"] for line in body.splitlines()] == ["dry-run"]


PROMPTED = """
from pytest_operator._actions import Action, ActionRunner, Approval, Risk, TerminalPrompt

async def test_prompted(request, tmp_path):
    ran = []

    async def restart(args):
        ran.append(args["node"])
        return "restarted"

    from pytest_operator._actions import Param
    action = Action("restart_node", "restart", Risk.HIGH, (Param("node", str),), restart)
    from pytest_operator.plugin import capture_lifted
    runner = ActionRunner(
        {"restart_node": action},
        approval=Approval.REQUIRED,
        prompt=TerminalPrompt(suspend=lambda: capture_lifted(request.config)),
    )
    entry = await runner.execute("restart_node", {"node": "node-1"})
    assert ran == ["node-1"] and entry.decision == "approved"
    assert entry.approved_by.startswith("terminal (")
    print("APPROVED-BY", entry.approved_by)
"""


def test_a_person_at_the_terminal_answers_despite_output_capture(
    pytester: pytest.Pytester,
) -> None:
    """pytest under a real pseudo-terminal with its default (fd) capture: the question
    reaches the terminal and the typed answer is read."""
    import os
    import subprocess

    from tests.pytester_runs import run_in_terminal

    pytester.makeini(INI)
    test = pytester.makepyfile(test_prompted=PROMPTED)
    answered: list[bool] = []

    def answer(seen: str, proc: subprocess.Popen[bytes], master: int) -> None:
        if not answered and "[y/N]" in seen:
            os.write(master, b"y\n")
            answered.append(True)

    run = run_in_terminal(pytester.path, str(test), timeout=90, on_output=answer)
    assert run.returncode == 0, run.text
    text = run.text
    assert "operator: run restart_node node=node-1 (risk high)? [y/N]" in text
    assert "1 passed" in text
