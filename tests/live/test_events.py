"""The events a live view follows: the monitor tells every tick (the very observation it
records) and each violation confirmed and cleared; the action runner tells each audit
entry; a listener that raises is dropped without failing the run; with no listener the
monitor builds no event."""

from __future__ import annotations

import logging

import pytest

from pytest_operator._actions import Action, ActionRunner, Args, Param, Risk
from pytest_operator._events import (
    Event,
    MonitorStarted,
    MonitorStopped,
    Tick,
    ViolationCleared,
    ViolationConfirmed,
)
from pytest_operator._invariants import Category, Finding, Invariant
from pytest_operator._monitor import Monitor
from pytest_operator._signals import ComponentSignals, Observation


class Script:
    """observe() returns node-1 up or down following a list (then its last state)."""

    def __init__(self, states: list[bool]) -> None:
        self.states = states
        self.i = 0

    async def __call__(self) -> Observation:
        up = self.states[min(self.i, len(self.states) - 1)]
        obs = Observation(at=1000.0 + self.i * 0.1, components=(ComponentSignals("node-1", up),))
        self.i += 1
        return obs


def down(obs: Observation) -> list[Finding]:
    return [Finding(c.component, "down") for c in obs.components if not c.reachable]


NODE_DOWN = Invariant("node_down", Category.AVAILABILITY, down, grace=0.15)


async def test_each_tick_carries_the_recorded_observation_and_the_active_violations() -> None:
    script = Script([True, False, False, False, True, True])
    monitor = Monitor(script, [NODE_DOWN], interval=0.01)
    events: list[Event] = []
    monitor.listeners.add(events.append)
    run = await monitor.run(timeout=0.3, until=None)

    assert isinstance(events[0], MonitorStarted) and events[0].timeout == 0.3
    assert isinstance(events[-1], MonitorStopped) and events[-1].stopped_by == "timeout"
    ticks = [e for e in events if isinstance(e, Tick)]
    # the same objects the timeline holds, in order: the view sees what the monitor records
    assert [t.observation for t in ticks] == run.timeline.observations
    assert all(t.observation is o for t, o in zip(ticks, run.timeline.observations, strict=True))
    kinds = [type(e).__name__ for e in events[1:-1]]
    # down at 1000.1, confirmed at 1000.3 (grace 0.15 s), cleared at 1000.4
    assert kinds[:6] == ["Tick", "Tick", "Tick", "ViolationConfirmed", "Tick", "ViolationCleared"]
    confirmed = next(e for e in events if isinstance(e, ViolationConfirmed)).violation
    cleared = next(e for e in events if isinstance(e, ViolationCleared)).violation
    assert confirmed.confirmed_at == pytest.approx(1000.3) and confirmed.cleared_at is None
    assert cleared.cleared_at == pytest.approx(1000.4)
    assert run.violations == [cleared]
    assert [len(t.active) for t in ticks[:5]] == [0, 0, 0, 1, 0]
    assert ticks[3].active == (confirmed,)


async def test_a_failed_observation_is_a_tick_without_one() -> None:
    calls = 0

    async def flaky() -> Observation:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("probe refused")
        return Observation(at=float(calls), components=(ComponentSignals("node-1", True),))

    monitor = Monitor(flaky, [NODE_DOWN], interval=0.01)
    events: list[Event] = []
    monitor.listeners.add(events.append)
    run = await monitor.run(timeout=0.05)
    ticks = [e for e in events if isinstance(e, Tick)]
    assert ticks[1].observation is None
    assert ticks[1].error == "ConnectionError: probe refused" == run.timeline.errors[0].error


async def test_a_listener_that_raises_is_dropped_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: Event) -> None:
        if isinstance(event, Tick):
            raise RuntimeError("view bug")

    seen: list[Event] = []
    monitor = Monitor(Script([True, False, False, False]), [NODE_DOWN], interval=0.01)
    monitor.listeners.add(broken)
    monitor.listeners.add(seen.append)
    with caplog.at_level(logging.ERROR, logger="pytest_operator._events"):
        run = await monitor.run(timeout=0.2)
    assert len(monitor.listeners) == 1  # the broken one is gone, the other stays
    assert run.first("node_down") is not None
    assert sum(isinstance(e, Tick) for e in seen) == len(run.timeline.observations)
    assert "event listener" in caplog.text and "view bug" in caplog.text


async def test_unsubscribing_leaves_the_monitor_without_listeners() -> None:
    monitor = Monitor(Script([True]), [NODE_DOWN], interval=0.01)
    seen: list[Event] = []
    remove = monitor.listeners.add(seen.append)
    await monitor.run(timeout=0.03)
    count = len(seen)
    remove()
    remove()  # idempotent
    assert not monitor.listeners
    await monitor.run(timeout=0.03)
    assert len(seen) == count > 0


async def test_the_runner_tells_each_audit_entry_as_it_is_appended() -> None:
    async def restart(args: Args) -> str:
        return f"{args['node']} restarted"

    action = Action("restart_node", "restart", Risk.LOW, (Param("node", str),), restart)
    runner = ActionRunner({"restart_node": action})
    heard: list[str] = []
    runner.on_audit.append(lambda e: heard.append(f"{e.action}:{e.outcome}:{len(runner.audit)}"))

    def broken(entry: object) -> None:
        raise RuntimeError("hook bug")

    runner.on_audit.append(broken)
    await runner.execute("restart_node", {"node": "node-1"})
    with pytest.raises(Exception, match="unknown action"):
        await runner.execute("drop_database", {})
    # told after the entry is in the audit; the broken hook removed, the actions unaffected
    assert heard == ["restart_node:ok:1", "drop_database:refused:2"]
    assert broken not in runner.on_audit
    assert [e.outcome for e in runner.audit] == ["ok", "refused"]
