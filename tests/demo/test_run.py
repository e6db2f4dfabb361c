"""The run the demo walks through is built by the code the fixtures use
(:func:`pytest_operator._run.open_run`): on a real cluster, its pieces are wired as the
fixtures wire them, and on the way out a fault left in place is healed before every
process is stopped, also when the block is cancelled (Ctrl-C in the demo)."""

from __future__ import annotations

import asyncio

import pytest

from pytest_operator import _registry
from pytest_operator._actions import Approval, Risk
from pytest_operator._chaos import kill
from pytest_operator._options import ApproveLevel, Backend, DiagnoserChoice, OperatorOptions
from pytest_operator._process import PidRecord
from pytest_operator._run import Run, build_engines, open_run
from pytest_operator._workload import steady

pytestmark = pytest.mark.slow

OPTIONS = OperatorOptions(
    subject="ratelimiter",
    backend=Backend.EMBEDDED,
    nodes=3,
    observe_interval=0.25,
    diagnoser=DiagnoserChoice.CAUSAL,
    trials=1,
    approve=ApproveLevel.LOW,
)


def _gone(records: list[PidRecord]) -> dict[str, list[int]]:
    return {r.name: r.alive_members() for r in records if r.alive_members()}


async def test_open_run_wires_the_fixtures_pieces_and_heals_before_it_stops() -> None:
    subject = _registry.load("ratelimiter")
    engines, skipped = build_engines(OPTIONS)
    assert skipped == [] and [e.name for e in engines] == ["causal"]
    async with open_run(subject, OPTIONS, engines) as run:
        assert run.cluster.running
        assert run.session.targets == ("node-1", "node-2", "node-3")
        # the options' policy, as the operator fixture applies it
        assert run.operator.actions.approval is Approval.AUTO
        assert run.operator.actions.max_auto_risk is Risk.LOW
        assert run.operator.history is run.history and run.workload.history is run.history
        await run.workload.start(steady(rate=20), keys="k1")
        injection = await run.chaos.leave(kill("node-2"))
        assert run.operator.injections.injections == [injection]
        assert not run.cluster.process("node-2").alive
        monitored = await run.operator.monitor(until="node_down", timeout=15)
        monitored.assert_detected("node_down", component="node-2")
        records = run.cluster.run_dir.pid_records()
    assert injection.healed_at is not None and injection.heal_error is None
    assert not run.cluster.running
    assert len(run.history) > 0
    assert {r.name for r in records} >= {"toxiproxy", "redis", "node-1", "node-3"}
    assert _gone(records) == {}


async def test_cancelled_inside_open_run_heals_and_stops() -> None:
    subject = _registry.load("ratelimiter")
    engines, _ = build_engines(OPTIONS)
    started = asyncio.Event()
    seen: list[Run] = []

    async def demo() -> None:
        async with open_run(subject, OPTIONS, engines) as run:
            seen.append(run)
            await run.chaos.leave(kill("node-1"))
            started.set()
            await asyncio.sleep(120)  # the person reads; Ctrl-C cancels

    task = asyncio.create_task(demo())
    async with asyncio.timeout(120):
        await started.wait()
    (run,) = seen
    records = run.cluster.run_dir.pid_records()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (injection,) = run.injections.injections
    assert injection.healed_at is not None
    assert not run.cluster.running
    assert len(records) >= 4
    assert _gone(records) == {}
