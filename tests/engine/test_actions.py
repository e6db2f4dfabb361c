"""The action runner: validation, dry-run, approval, kill switch, retries, verification, audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_operator._actions import (
    Action,
    ActionError,
    ActionRunner,
    Approval,
    Args,
    Param,
    Risk,
)


def catalogue(calls: list[str], *, fail_times: int = 0) -> dict[str, Action]:
    failures = iter(range(fail_times))

    async def run(args: Args) -> str:
        if next(failures, None) is not None:
            raise ConnectionError("node did not answer")
        calls.append(f"set {args['key']}={args['limit']}")
        return "done"

    async def restart(args: Args) -> str:
        calls.append(f"restart {args['node']}")
        return "restarted"

    return {
        "update_limit": Action(
            "update_limit",
            "set a limit",
            Risk.MEDIUM,
            (Param("key", str), Param("limit", int, minimum=1, maximum=1000)),
            run,
            idempotent=True,  # setting a limit twice is setting it once
        ),
        "restart_node": Action(
            "restart_node",
            "restart",
            Risk.HIGH,
            (Param("node", str, choices=("node-1", "node-2")),),
            restart,
        ),
    }


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("update_limit", {"key": "k"}, "update_limit: missing parameter limit"),
        ("update_limit", {"key": "k", "limit": 0}, "limit=0: must be >= 1"),
        ("update_limit", {"key": "k", "limit": "many"}, "limit: expected int, got 'many'"),
        ("update_limit", {"key": "k", "limit": True}, "limit: expected int, got True"),
        ("update_limit", {"key": "k", "limit": 5, "x": 1}, "unknown parameter(s) x"),
        (
            "restart_node",
            {"node": "node-9"},
            "node=node-9: invalid value; valid values: node-1, node-2",
        ),
        ("drop_table", {}, "unknown action 'drop_table'; actions: restart_node, update_limit"),
    ],
)
async def test_bad_parameters_are_refused_and_audited(
    name: str, args: dict[str, object], message: str
) -> None:
    calls: list[str] = []
    runner = ActionRunner(catalogue(calls))
    with pytest.raises(ActionError) as err:
        await runner.execute(name, args)
    assert message in str(err.value)
    assert calls == []


async def test_dry_run_and_kill_switch_do_nothing() -> None:
    calls: list[str] = []
    runner = ActionRunner(catalogue(calls), dry_run=True)
    entry = await runner.execute("update_limit", {"key": "k", "limit": 5})
    assert entry.outcome == "dry-run" and calls == []
    runner = ActionRunner(catalogue(calls), kill_switch=True)
    with pytest.raises(ActionError, match="kill switch is on"):
        await runner.execute("update_limit", {"key": "k", "limit": 5})
    assert calls == [] and runner.audit[-1].outcome == "refused"


async def test_risky_actions_need_approval() -> None:
    calls: list[str] = []
    runner = ActionRunner(catalogue(calls))  # auto up to MEDIUM
    with pytest.raises(ActionError, match=r"restart_node \(risk high\) was not approved"):
        await runner.execute("restart_node", {"node": "node-1"})
    asked: list[str] = []

    async def approve(action: Action, args: Args) -> bool:
        asked.append(action.name)
        return True

    runner = ActionRunner(catalogue(calls), approver=approve, approval=Approval.REQUIRED)
    await runner.execute("update_limit", {"key": "k", "limit": "7"})
    await runner.execute("restart_node", {"node": "node-1"})
    assert asked == ["update_limit", "restart_node"]
    assert calls == ["set k=7", "restart node-1"]


async def test_retries_with_backoff_then_verifies() -> None:
    calls: list[str] = []
    runner = ActionRunner(catalogue(calls, fail_times=2), retries=2, backoff=0.001)
    verified = []

    async def verify() -> bool:
        verified.append(True)
        return True

    entry = await runner.execute("update_limit", {"key": "k", "limit": 5}, verify=verify)
    assert (entry.outcome, entry.attempts, calls, verified) == ("ok", 3, ["set k=5"], [True])

    runner = ActionRunner(catalogue([], fail_times=5), retries=1, backoff=0.001)
    with pytest.raises(ActionError, match="failed after 2 attempts: ConnectionError"):
        await runner.execute("update_limit", {"key": "k", "limit": 5})
    assert runner.audit[-1].outcome == "failed"


async def test_failed_verification_is_an_error() -> None:
    runner = ActionRunner(catalogue([]))

    async def verify() -> bool:
        return False

    with pytest.raises(ActionError, match="ran but verification failed"):
        await runner.execute("update_limit", {"key": "k", "limit": 5}, verify=verify)
    assert runner.audit[-1].outcome == "unverified"


def test_an_action_target_must_be_one_of_its_parameters() -> None:
    async def run(args: Args) -> str:
        return "ran"

    with pytest.raises(
        ValueError, match=r"bounce: target 'node' is not a parameter \(parameters: svc\)"
    ):
        Action("bounce", "b", Risk.LOW, (Param("svc", str),), run, target="node")


async def test_both_subjects_declare_what_their_restarts_remedy() -> None:
    from pytest_operator._causes import FaultKind
    from subjects.etcd.actions import MaintenanceApi
    from subjects.etcd.actions import catalogue as etcd_catalogue
    from subjects.ratelimiter.actions import Declared, ManagementApi
    from subjects.ratelimiter.actions import catalogue as rl_catalogue

    async def restart(name: str) -> None:
        raise AssertionError("not called")

    rl_api = ManagementApi({"node-1": "http://127.0.0.1:1"})
    etcd_api = MaintenanceApi({"m1": "http://127.0.0.1:1"})
    declared = Declared(limit=50, window_ms=1000, algorithm="sliding_log")
    rl = {a.name: a for a in rl_catalogue(rl_api, restart, declared)}
    undeclared = {a.name for a in rl_catalogue(rl_api, restart)}
    etcd = {a.name: a for a in etcd_catalogue(etcd_api, restart)}
    await rl_api.aclose()
    await etcd_api.aclose()
    for action, target in ((rl["restart_node"], "node"), (etcd["restart_member"], "member")):
        assert action.remedies == {FaultKind.CRASH, FaultKind.PAUSE}
        assert action.target == target
    assert rl["update_limit"].remedies == {FaultKind.MISCONFIGURATION}
    assert not rl["reset_counter"].remedies
    # the declared limit applied again: cluster-wide (no target, no parameter), safe to retry
    restore = rl["restore_limits"]
    assert restore.remedies == {FaultKind.MISCONFIGURATION}
    assert (restore.target, restore.params, restore.idempotent) == (None, (), True)
    assert restore.timeout is not None and restore.risk is Risk.MEDIUM
    assert "restore_limits" not in undeclared  # nothing to restore without a declaration
    # a PUT and a reset are idempotent; a restart is not (it changes the node's start time)
    idempotent = {name for name, a in rl.items() if a.idempotent}
    assert idempotent == {"update_limit", "reset_counter", "restore_limits"}
    assert all(a.timeout is not None for n, a in rl.items() if n != "restart_node")
    assert not etcd["transfer_leadership"].remedies


async def test_a_kill_switch_flipped_between_actions_stops_the_next(tmp_path: Path) -> None:
    from pytest_operator._options import KillSwitch

    calls: list[str] = []
    switch = tmp_path / "stop"
    runner = ActionRunner(catalogue(calls), kill_switch=KillSwitch(path=switch))
    await runner.execute("update_limit", {"key": "k", "limit": 5})
    switch.touch()
    with pytest.raises(ActionError, match="kill switch is on"):
        await runner.execute("update_limit", {"key": "k", "limit": 6})
    assert calls == ["set k=5"]
    assert [e.outcome for e in runner.audit] == ["ok", "refused"]
