"""The kill switch flipped mid-run, as a person would: a first node is killed and the
operator restarts it; then the switch (a file, as ``--operator-kill-switch file:PATH``
names it) is turned on and a second node is killed. The operator still detects and
diagnoses it, but its restart is refused before anything runs: the audit shows the
refusal, nothing ran after the flip, and the node is still down."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_operator import Action, FaultKind, kill, steady
from pytest_operator._options import KillSwitch

pytestmark = pytest.mark.subject("ratelimiter")


async def approve_restarts(action: Action, args: object) -> bool:
    return FaultKind.CRASH in action.remedies


async def test_kill_switch_flipped_mid_run_stops_the_operator(
    operator, chaos, workload, tmp_path: Path
):
    switch = tmp_path / "STOP"
    operator.actions.kill_switch = KillSwitch(path=switch)
    operator.actions.approver = approve_restarts
    await workload.start(steady(rate=100), keys="k1")

    await chaos.leave(kill("node-1"))
    first = await operator.monitor(until="node_down", timeout=15)
    first.assert_detected("node_down", within=5.0, component="node-1")
    before = await operator.remediate(first)
    assert before.ok, before.describe()
    await operator.assert_recovered(before, within=15.0, sustain=2.0)

    switch.touch()  # flipped mid-run
    flipped_at = time.time()
    await chaos.leave(kill("node-2"))
    second = await operator.monitor(until="node_down", timeout=15)
    second.assert_detected("node_down", component="node-2")
    after = await operator.remediate(second)
    assert [(s.action, s.args, s.outcome) for s in after.steps] == [
        ("restart_node", (("node", "node-2"),), "refused")
    ]
    assert not after.ok

    audit = operator.actions.audit
    assert [(e.action, e.outcome) for e in audit] == [
        ("restart_node", "ok"),
        ("restart_node", "refused"),
    ]
    assert "kill switch is on" in audit[-1].detail
    assert all(e.outcome == "refused" and e.attempts == 0 for e in audit if e.at >= flipped_at)
    # Nothing brought node-2 back: a fresh look still finds it down.
    still = await operator.monitor(until="node_down", timeout=10)
    still.assert_detected("node_down", component="node-2")
