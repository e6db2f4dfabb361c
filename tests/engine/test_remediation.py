"""remediate(): a diagnosis's recommendations as an ordered workflow through the
runner's policy, stopping at the first step refused or failed; what cannot be left in
place for the operator is refused."""

from __future__ import annotations

import pytest

from pytest_operator._actions import Action, ActionRunner, Args, Param, Risk
from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._chaos import ChaosUnsupported, check_leavable, kill, partition, pause
from pytest_operator._diagnosis import Diagnosis, Hypothesis, Recommendation
from pytest_operator._remediation import NotRecovered, remediate, wait_recovered
from pytest_operator._signals import Observation


def runner(calls: list[str], **policy: object) -> ActionRunner:
    async def restart(args: Args) -> str:
        calls.append(f"restart {args['node']}")
        return f"{args['node']} restarted"

    action = Action(
        "restart_node",
        "restart",
        Risk.MEDIUM,
        (Param("node", str, choices=("node-1", "node-2")),),
        restart,
        remedies=frozenset({FaultKind.CRASH}),
        target="node",
    )
    return ActionRunner({"restart_node": action}, **policy)  # type: ignore[arg-type]  # policy fields


def diagnosis(*recs: Recommendation) -> Diagnosis:
    return Diagnosis("causal", (Hypothesis(RootCause(FaultKind.CRASH, "node-1"), 0.9),), recs)


async def test_steps_run_in_order_and_stop_at_the_first_refused() -> None:
    calls: list[str] = []
    r = runner(calls)
    d = diagnosis(
        Recommendation("restart_node", (("node", "node-1"),)),
        Recommendation("drop_database", ()),
        Recommendation("restart_node", (("node", "node-2"),)),
    )
    done = await remediate(d, r)
    assert calls == ["restart node-1"]
    assert [(s.action, s.outcome) for s in done.steps] == [
        ("restart_node", "ok"),
        ("drop_database", "refused"),
    ]
    assert "unknown action 'drop_database'" in done.steps[1].detail
    assert [(e.action, e.outcome) for e in r.audit] == [
        ("restart_node", "ok"),
        ("drop_database", "refused"),
    ]
    assert not done.ok
    assert done.cause == "crash(node-1)"


async def test_an_argument_outside_the_catalogue_is_refused_never_run() -> None:
    calls: list[str] = []
    done = await remediate(
        diagnosis(Recommendation("restart_node", (("node", "node-7"),))), runner(calls)
    )
    assert calls == []
    assert [s.outcome for s in done.steps] == ["refused"]
    assert "node=node-7: invalid value" in done.steps[0].detail


async def test_a_dry_run_decides_and_audits_but_runs_nothing_and_recovers_nothing() -> None:
    calls: list[str] = []
    r = runner(calls, dry_run=True)
    done = await remediate(diagnosis(Recommendation("restart_node", (("node", "node-1"),))), r)
    assert calls == []
    assert [s.outcome for s in done.steps] == ["dry-run"]
    assert not done.ok
    with pytest.raises(NotRecovered, match="nothing was remedied: causal on crash"):
        await wait_recovered(done, _never, (), within=1.0, sustain=0.1, interval=0.1)


async def _never() -> Observation:
    raise AssertionError("a remediation that did nothing is never observed")


def test_only_process_faults_can_be_left_for_the_operator() -> None:
    check_leavable(kill("node-1"))
    check_leavable(pause("node-1"))
    with pytest.raises(ChaosUnsupported, match=r"partition\(node-1 -> redis\) cannot be left"):
        check_leavable(partition("node-1", "redis"))
