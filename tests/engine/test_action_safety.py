"""The runner's safety rules with real processes: a timeout on every attempt, no retry
after an attempt that may have changed state unless the action is idempotent, a kill
switch read before every retry, dry-run, approval (callback, terminal prompt, refusal),
and the audit trail as JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import pytest

from pytest_operator._actions import (
    Action,
    ActionError,
    ActionRunner,
    Approval,
    Args,
    NotApplied,
    Param,
    Risk,
    TerminalPrompt,
)
from pytest_operator._options import KillSwitch


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def run_process(*argv: str, pids: list[int] | None = None) -> str:
    """Runs a real process; a cancelled attempt (its timeout) kills it."""
    proc = await asyncio.create_subprocess_exec(*argv)
    if pids is not None:
        pids.append(proc.pid)
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if code != 0:
        raise RuntimeError(f"{argv[0]} exited with {code}")
    return f"{argv[0]} exited 0"


def sleeper(pids: list[int], *, idempotent: bool = False, timeout: float | None = 0.3) -> Action:
    async def run(args: Args) -> str:
        return await run_process("sleep", str(args["seconds"]), pids=pids)

    return Action(
        "drain",
        "wait for a node to drain",
        Risk.LOW,
        (Param("seconds", int),),
        run,
        timeout=timeout,
        idempotent=idempotent,
    )


def appender(state: Path, *, fail: bool, idempotent: bool = False) -> Action:
    """Changes state (a line appended to a file by a real shell), then fails or not."""

    async def run(args: Args) -> str:
        script = f'echo "{args["node"]}" >> "{state}"' + ("; exit 3" if fail else "")
        return await run_process("sh", "-c", script)

    return Action(
        "restart_node",
        "restart a node",
        Risk.MEDIUM,
        (Param("node", str),),
        run,
        idempotent=idempotent,
    )


async def test_an_attempt_past_its_timeout_is_stopped_and_not_retried() -> None:
    pids: list[int] = []
    runner = ActionRunner({"drain": sleeper(pids)}, retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(ActionError, match=r"not retried .*timed out after 0.3s"):
        await runner.execute("drain", {"seconds": 30})
    assert time.monotonic() - started < 5
    entry = runner.audit[-1]
    assert (entry.outcome, entry.attempts) == ("failed", 1)
    assert len(pids) == 1 and not pid_alive(pids[0])


async def test_the_runner_timeout_applies_when_the_action_sets_none() -> None:
    pids: list[int] = []
    action = sleeper(pids, idempotent=True, timeout=None)
    runner = ActionRunner({"drain": action}, retries=1, backoff=0.01, timeout=0.2)
    with pytest.raises(ActionError, match=r"drain failed after 2 attempts: timed out after 0.2s"):
        await runner.execute("drain", {"seconds": 30})
    assert len(pids) == 2 and not any(pid_alive(p) for p in pids)
    assert runner.audit[-1].attempts == 2


async def test_a_non_idempotent_action_is_not_retried_after_a_state_change(
    tmp_path: Path,
) -> None:
    state = tmp_path / "restarts"
    runner = ActionRunner({"restart_node": appender(state, fail=True)}, retries=3, backoff=0.01)
    with pytest.raises(ActionError, match=r"not retried .*RuntimeError: sh exited with 3"):
        await runner.execute("restart_node", {"node": "node-1"})
    assert state.read_text().splitlines() == ["node-1"]  # changed once, never again
    entry = runner.audit[-1]
    assert (entry.outcome, entry.attempts) == ("failed", 1)
    assert "may have changed state" in entry.detail

    idem = ActionRunner(
        {"restart_node": appender(state, fail=True, idempotent=True)}, retries=2, backoff=0.01
    )
    with pytest.raises(ActionError, match="failed after 3 attempts"):
        await idem.execute("restart_node", {"node": "node-2"})
    assert state.read_text().splitlines() == ["node-1", "node-2", "node-2", "node-2"]


async def test_an_attempt_that_changed_nothing_is_retried(tmp_path: Path) -> None:
    """A refused connection never reached the node: a non-idempotent action is tried
    again; here the node's port starts listening after the first refusal."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers: list[asyncio.Server] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"restarted\n")
        await writer.drain()
        writer.close()

    async def run(args: Args) -> str:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            if not servers:  # the node comes up after the first try
                servers.append(await asyncio.start_server(answer, "127.0.0.1", port))
            raise
        line = await reader.readline()
        writer.close()
        return line.decode().strip()

    action = Action("restart_node", "restart", Risk.LOW, (Param("node", str),), run)
    runner = ActionRunner({"restart_node": action}, retries=2, backoff=0.01)
    try:
        entry = await runner.execute("restart_node", {"node": "node-1"})
    finally:
        for server in servers:
            server.close()
    assert (entry.outcome, entry.attempts, entry.detail) == ("ok", 2, "restarted")

    async def not_applied(args: Args) -> str:
        raise NotApplied("lock held by another operator")

    runner = ActionRunner(
        {"x": Action("x", "x", Risk.LOW, (), not_applied)}, retries=1, backoff=0.01
    )
    with pytest.raises(ActionError, match="failed after 2 attempts: NotApplied"):
        await runner.execute("x")


async def test_a_kill_switch_flipped_during_an_attempt_stops_its_retries(tmp_path: Path) -> None:
    switch = tmp_path / "stop"
    state = tmp_path / "state"

    async def run(args: Args) -> str:
        await run_process("sh", "-c", f'echo try >> "{state}"; touch "{switch}"; exit 1')
        return "unreachable"

    action = Action("flush", "flush", Risk.LOW, (), run, idempotent=True)
    runner = ActionRunner(
        {"flush": action}, retries=3, backoff=0.01, kill_switch=KillSwitch(path=switch)
    )
    with pytest.raises(ActionError, match="kill switch is on; flush not retried"):
        await runner.execute("flush")
    assert state.read_text().splitlines() == ["try"]
    assert [(e.outcome, e.attempts) for e in runner.audit] == [("refused", 1)]


async def test_dry_run_decides_and_audits_but_runs_nothing(tmp_path: Path) -> None:
    state = tmp_path / "restarts"
    audit = tmp_path / "audit" / "t.jsonl"
    runner = ActionRunner(
        {"restart_node": appender(state, fail=False)}, dry_run=True, approval=Approval.REQUIRED
    )
    runner.audit_to(audit)
    entry = await runner.execute("restart_node", {"node": "node-1"})
    assert entry.outcome == "dry-run" and not state.exists()
    with pytest.raises(ActionError, match="unknown parameter"):
        await runner.execute("restart_node", {"node": "node-1", "force": 1})
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["action"], r["decision"], r["outcome"]) for r in lines] == [
        ("restart_node", "dry-run", "dry-run"),
        ("restart_node", "invalid", "refused"),
    ]
    assert not state.exists()


async def test_the_audit_trail_is_json_lines_with_who_decided(tmp_path: Path) -> None:
    state = tmp_path / "restarts"
    audit = tmp_path / "audit.jsonl"
    answers = iter([True, False])

    async def on_call(action: Action, args: Args) -> bool:
        return next(answers)

    cat = {"restart_node": appender(state, fail=False)}
    runner = ActionRunner(cat, approver=on_call, max_auto_risk=Risk.LOW)
    runner.audit_to(audit)
    await runner.execute("restart_node", {"node": "node-1"})
    with pytest.raises(ActionError, match="was not approved"):
        await runner.execute("restart_node", {"node": "node-2"})
    runner.approver = None
    with pytest.raises(ActionError, match="no approver and no terminal"):
        await runner.execute("restart_node", {"node": "node-3"})
    runner.max_auto_risk = Risk.MEDIUM
    await runner.execute("restart_node", {"node": "node-4"})
    with pytest.raises(ActionError, match="unknown action 'drop_table'"):
        await runner.execute("drop_table", {"name": "users"})
    rows = [json.loads(line) for line in audit.read_text().splitlines()]
    assert set(rows[0]) == {
        "time",
        "at",
        "action",
        "args",
        "risk",
        "decision",
        "outcome",
        "detail",
        "attempts",
        "approved_by",
        "started_at",
    }
    assert rows[0]["started_at"] >= rows[0]["at"] - 5  # the first attempt's start, epoch s
    assert rows[1]["started_at"] is None  # refused: never ran
    got = [
        (r["args"], r["risk"], r["decision"], r["outcome"], r["attempts"], r["approved_by"])
        for r in rows
    ]
    assert got == [
        ({"node": "node-1"}, "medium", "approved", "ok", 1, "on_call"),
        ({"node": "node-2"}, "medium", "rejected", "refused", 0, None),
        ({"node": "node-3"}, "medium", "no approver", "refused", 0, None),
        ({"node": "node-4"}, "medium", "auto", "ok", 1, "policy: auto up to medium"),
        ({"name": "users"}, None, "invalid", "refused", 0, None),
    ]
    assert rows[0]["time"].endswith("Z") and rows[0]["time"].startswith(time.strftime("%Y-"))
    assert state.read_text().splitlines() == ["node-1", "node-4"]


async def test_a_terminal_is_asked_when_no_approver_is_given(tmp_path: Path) -> None:
    """A real pseudo-terminal answers the prompt; a pipe is no terminal: refused."""
    import pty

    state = tmp_path / "restarts"
    cat = {"restart_node": appender(state, fail=False)}
    master, slave = pty.openpty()
    out = tmp_path / "shown"
    with open(slave, closefd=True) as tty_in, out.open("w") as shown:
        os.write(master, b"y\n")
        runner = ActionRunner(
            cat, approval=Approval.REQUIRED, prompt=TerminalPrompt(stdin=tty_in, stdout=shown)
        )
        entry = await runner.execute("restart_node", {"node": "node-1"})
        os.write(master, b"no\n")
        with pytest.raises(ActionError, match="was not approved"):
            await runner.execute("restart_node", {"node": "node-2"})
    os.close(master)
    assert (entry.decision, entry.approved_by) == ("approved", runner.prompt.name)  # type: ignore[union-attr]
    assert entry.approved_by.startswith("terminal (")  # type: ignore[union-attr]
    assert "run restart_node node=node-1 (risk medium)? [y/N]" in out.read_text()
    assert state.read_text().splitlines() == ["node-1"]

    read, write = os.pipe()
    os.close(write)
    with open(read) as pipe_in:
        runner = ActionRunner(cat, approval=Approval.REQUIRED, prompt=TerminalPrompt(stdin=pipe_in))
        with pytest.raises(ActionError, match="no approver and no terminal"):
            await runner.execute("restart_node", {"node": "node-3"})
    assert runner.audit[-1].decision == "no approver"
    assert state.read_text().splitlines() == ["node-1"]


def test_an_action_timeout_must_be_positive() -> None:
    async def run(args: Args) -> str:
        return "ran"

    with pytest.raises(ValueError, match="bounce: timeout must be > 0, got 0"):
        Action("bounce", "b", Risk.LOW, (), run, timeout=0)
