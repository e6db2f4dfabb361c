"""The monitor loop over a scripted sequence of observations (pure: no subject)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from pytest_operator._invariants import Category, Finding, Invariant
from pytest_operator._monitor import Monitor, NotDetected, UnexpectedViolation
from pytest_operator._signals import ComponentSignals, Observation


class Script:
    """observe() returns node-1 reachable or not, following a list of booleans."""

    def __init__(self, states: list[bool], *, at0: float = 1000.0, step: float = 0.1) -> None:
        self.states = states
        self.i = 0
        self.clock = itertools.count()
        self.at0, self.step = at0, step

    async def __call__(self) -> Observation:
        up = self.states[min(self.i, len(self.states) - 1)]
        t = self.at0 + self.i * self.step
        self.i += 1
        return Observation(at=t, components=(ComponentSignals("node-1", reachable=up),))


def down(obs: Observation) -> list[Finding]:
    return [Finding(c.component, "down") for c in obs.components if not c.reachable]


def inv(grace: float = 0.0) -> Invariant:
    return Invariant("node_down", Category.AVAILABILITY, down, grace=grace)


async def test_grace_period_confirms_only_persistent_findings() -> None:
    # down for one tick (a blip), up, then down for good
    script = Script([True, False, True, False, False, False, False])
    run = await Monitor(script, [inv(grace=0.2)], interval=0.01).run(timeout=0.2)
    v = run.first("node_down")
    assert v is not None
    assert v.first_seen == pytest.approx(1000.3)  # the blip at 1000.1 was forgiven
    assert v.confirmed_at == pytest.approx(1000.5)


async def test_until_stops_early_and_clears_when_the_finding_goes() -> None:
    script = Script([True, False, False, True, True] + [True] * 100)
    monitor = Monitor(script, [inv()], interval=0.01)
    run = await monitor.run(timeout=5.0, until="node_down", settle=0.03)
    assert run.stopped_by == "node_down"
    assert run.ended_at - run.started_at < 2.0
    v = run.first("node_down")
    assert v is not None and v.cleared_at == pytest.approx(1000.3)


async def test_assert_detected_messages_name_expected_seen_and_last_observation() -> None:
    run = await Monitor(Script([True]), [inv()], interval=0.01).run(timeout=0.05)
    with pytest.raises(NotDetected) as err:
        run.assert_detected("node_down", component="node-1")
    assert str(err.value).startswith("node_down at node-1 not detected within 0.")
    assert "(saw: nothing; last observation: node-1=up)" in str(err.value)


async def test_assert_detected_within_measures_from_the_fault() -> None:
    run = await Monitor(Script([False]), [inv()], interval=0.01).run(timeout=0.05)
    run.fault_at = 999.0  # the fault went in 1 s before the first observation
    with pytest.raises(
        NotDetected, match=r"node_down not detected within 0.5 s: detected after 1.00 s"
    ):
        run.assert_detected("node_down", within=0.5)
    assert run.assert_detected("node_down", within=1.5).component == "node-1"


async def test_assert_no_violation_lists_what_was_seen() -> None:
    run = await Monitor(Script([False]), [inv()], interval=0.01).run(timeout=0.05)
    with pytest.raises(
        UnexpectedViolation, match=r"expected no violation, saw 1: node_down@node-1: down"
    ):
        run.assert_no_violation()
    run.assert_no_violation("some_other_invariant")


async def test_a_failing_or_hanging_observe_is_recorded_not_fatal() -> None:
    calls = itertools.count()

    async def flaky() -> Observation:
        n = next(calls)
        if n == 0:
            raise ConnectionError("subject said no")
        if n == 1:
            await asyncio.sleep(10)
        return Observation(at=float(n))

    monitor = Monitor(flaky, [inv()], interval=0.01, observe_timeout=0.05)
    run = await monitor.run(timeout=0.3)
    assert [e.error for e in run.timeline.errors[:2]] == [
        "ConnectionError: subject said no",
        "observe() took over 0.05 s",
    ]
    assert run.timeline.observations, "observations resumed after the failures"


def test_bad_configuration_is_refused_with_a_message() -> None:
    with pytest.raises(ValueError, match="monitor interval must be > 0, got 0"):
        Monitor(Script([True]), [inv()], interval=0)
    with pytest.raises(ValueError, match="duplicate invariant names: node_down"):
        Monitor(Script([True]), [inv(), inv()])
    with pytest.raises(KeyError, match="unknown invariant 'nope' \\(valid: node_down\\)"):
        Monitor(Script([True]), [inv()]).invariant("nope")
    with pytest.raises(ValueError, match="grace -1 must be >= 0"):
        inv(grace=-1)


async def test_wait_healthy_returns_once_every_component_is_ready_and_every_link_up() -> None:
    from pytest_operator._monitor import unhealthy, wait_healthy
    from pytest_operator._signals import LinkSignals

    seen = [
        Observation(at=1.0, components=(ComponentSignals("store", reachable=False),)),
        Observation(at=2.0, components=(ComponentSignals("svc", reachable=True, ready=False),)),
        Observation(
            at=3.0,
            components=(ComponentSignals("svc", reachable=True, ready=True),),
            links=(LinkSignals("svc", "store", up=False),),
        ),
        Observation(at=4.0, components=(ComponentSignals("svc", reachable=True, ready=True),)),
    ]
    assert [unhealthy(o) for o in seen] == [
        ["store unreachable"],
        ["svc not ready"],
        ["svc->store down"],
        [],
    ]
    calls = iter(seen)

    async def observe() -> Observation:
        return next(calls)

    healthy = await wait_healthy(observe, timeout=5.0, interval=0.001)
    assert healthy.at == 4.0


async def test_wait_healthy_gives_up_naming_what_is_wrong() -> None:
    from pytest_operator._monitor import NotHealthy, wait_healthy

    async def observe() -> Observation:
        return Observation(
            at=1.0, components=(ComponentSignals("svc", reachable=True, ready=False),)
        )

    async def broken() -> Observation:
        raise ConnectionError("refused")

    with pytest.raises(NotHealthy, match=r"^the subject was not healthy after 0 s: svc not ready$"):
        await wait_healthy(observe, timeout=0.2, interval=0.01)
    with pytest.raises(NotHealthy, match=r"observe\(\) failed: ConnectionError: refused$"):
        await wait_healthy(broken, timeout=0.2, interval=0.01)
