"""The open-loop workload against a stand-in node over real sockets.

Timing assertions are properties with generous margins (the machine is shared):
a closed loop would take tens of seconds where these take about one.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time

import pytest

from pytest_operator._history import History, Outcome
from pytest_operator._workload import Workload, hot, steady, uniform
from subjects.ratelimiter.client import RateLimiterClient
from tests.workload.standin import StandinNode


def _workload(
    node: StandinNode,
    targets: tuple[str, ...] = ("n1",),
    *,
    timeout: float = 2.0,
    max_in_flight: int = 10_000,
    max_lag: float = 1.0,
    choice: str = "round_robin",
    seed: int = 0,
) -> Workload:
    """A workload whose targets all name the stand-in node."""
    client = RateLimiterClient({t: node.url for t in targets}, timeout=10.0)
    return Workload(
        client,
        targets,
        timeout=timeout,
        max_in_flight=max_in_flight,
        max_lag=max_lag,
        choice=choice,
        seed=seed,
    )


async def test_the_loop_is_open_a_slow_node_does_not_delay_sends(node: StandinNode) -> None:
    async with _workload(node, timeout=5.0) as workload:
        began = time.monotonic()
        history = await workload.run(steady(100, 1.0), hot("slow:0.5"))
        elapsed = time.monotonic() - began
    ops = sorted(history.ops, key=lambda op: op.index)
    assert len(ops) == 100
    assert {op.outcome for op in ops} == {Outcome.OK}
    # Sends follow the schedule, not the answers: every answer took >= 0.5 s, yet the
    # hundred requests left within about one second of each other.
    assert all(op.latency is not None and op.latency >= 0.5 for op in ops)
    assert ops[-1].send - ops[0].send < 1.5
    assert elapsed < 4.0  # a closed loop would need 100 x 0.5 s
    assert node.max_concurrent >= 20
    stats = workload.lateness()
    assert stats.sent == 100 and stats.dropped == 0
    assert stats.p99 < 0.25
    # The schedule itself: 10 ms apart.
    gaps = {round(b.scheduled - a.scheduled, 6) for a, b in itertools.pairwise(ops)}
    assert gaps == {0.01}
    assert [op.index for op in ops] == list(range(100))


async def test_outcomes_are_recorded_per_request(node: StandinNode) -> None:
    keys = ["allow", "block", "boom", "slow:5"]
    async with _workload(node, timeout=0.3) as workload:
        history = await workload.run(steady(100, 0.4), uniform(keys, seed=1))
    by_key = collections.defaultdict(set)
    for op in history.ops:
        by_key[op.key].add((op.outcome, op.detail, op.recv is None))
        assert op.target == "n1"
        assert op.send >= op.scheduled - 1e-6
    assert by_key == {
        "allow": {(Outcome.OK, None, False)},
        "block": {(Outcome.REJECTED, None, False)},
        "boom": {(Outcome.ERROR, "HTTP 500 Internal Server Error: redis is down", False)},
        "slow:5": {(Outcome.TIMEOUT, "no answer within 0.3 s", True)},
    }
    assert len(history) == 40
    # a timeout has no receive time, but the history knows when the client gave up on it
    for op in history.ops:
        if op.outcome is Outcome.TIMEOUT:
            assert op.gave_up == pytest.approx(0.3, abs=0.1)
            assert op.resolved == op.send + op.gave_up
        else:
            assert op.gave_up is None and op.resolved == op.recv


async def test_targets_are_taken_round_robin_or_at_random(node: StandinNode) -> None:
    targets = ("n1", "n2", "n3")
    async with _workload(node, targets) as workload:
        history = await workload.run(steady(300, 0.3), "allow")
    assert collections.Counter(op.target for op in history.ops) == dict.fromkeys(targets, 30)
    ordered = sorted(history.ops, key=lambda op: op.index)
    assert [op.target for op in ordered[:6]] == ["n1", "n2", "n3", "n1", "n2", "n3"]

    picks = []
    for _ in range(2):
        async with _workload(node, targets, choice="random", seed=5) as workload:
            history = await workload.run(steady(300, 0.2), "allow")
        picks.append([op.target for op in sorted(history.ops, key=lambda op: op.index)])
    assert picks[0] == picks[1]
    assert set(picks[0]) == set(targets) and picks[0][:6] != ["n1", "n2", "n3"] * 2


async def test_stop_without_drain_cancels_in_flight_requests_cleanly(node: StandinNode) -> None:
    history = History()
    workload = Workload(RateLimiterClient({"n1": node.url}), ["n1"], history, timeout=30.0)
    await workload.start(steady(50), hot("slow:20"))
    assert workload.running
    await asyncio.sleep(0.3)
    assert workload.in_flight > 5
    await workload.stop(drain=False)
    await workload.requester.aclose()
    assert not workload.running and workload.in_flight == 0
    assert len(history) == workload.lateness().sent > 5
    assert {(op.outcome, op.detail, op.recv) for op in history.ops} == {
        (Outcome.TIMEOUT, "cancelled at stop", None)
    }
    # abandoned at the stop: given up on after at most the time the workload ran
    assert all(op.gave_up is not None and 0 <= op.gave_up < 1.0 for op in history.ops)
    leftovers = [t for t in asyncio.all_tasks() if t.get_name() == "workload-driver"]
    assert leftovers == []
    # Stopped means stopped: nothing more is sent.
    sent = len(node.requests)
    await asyncio.sleep(0.1)
    assert len(node.requests) == sent


async def test_stop_drains_in_flight_requests_by_default(node: StandinNode) -> None:
    async with _workload(node, timeout=5.0) as workload:
        await workload.start(steady(100), hot("slow:0.3"))
        await asyncio.sleep(0.2)
        await workload.stop()
        assert workload.in_flight == 0
    assert len(workload.history) > 5
    assert {op.outcome for op in workload.history.ops} == {Outcome.OK}


async def test_past_the_in_flight_cap_arrivals_are_dropped_not_delayed(node: StandinNode) -> None:
    async with _workload(node, timeout=5.0, max_in_flight=3) as workload:
        history = await workload.run(steady(100, 0.5), hot("slow:1"))
        stats = workload.lateness()
    assert len(history) == 3
    assert stats.dropped == 47 and stats.sent == 3


async def test_arrivals_too_far_behind_schedule_are_dropped(node: StandinNode) -> None:
    async with _workload(node, max_lag=0.1) as workload:
        await workload.start(steady(500, 1.0), "allow")
        await asyncio.sleep(0.2)
        time.sleep(0.5)  # block the event loop: the generator falls 0.5 s behind
        await workload.wait()
        await workload.stop()
    stats = workload.lateness()
    assert stats.sent + stats.dropped == 500
    assert stats.sent == len(workload.history)
    assert stats.dropped >= 100  # about 0.4 s x 500/s were more than 0.1 s late
    # Without the cap ~200 sends would leave over 0.15 s late; with it, only the few
    # launched on time just before the block (their tasks ran after it).
    assert sum(1 for op in workload.history.ops if op.lateness > 0.15) <= 20


async def test_misuse_is_refused_with_the_reason(node: StandinNode) -> None:
    client = RateLimiterClient({"n1": node.url})
    try:
        with pytest.raises(ValueError) as info:
            Workload(client, [])
        assert str(info.value) == "a workload needs a non-empty sequence of targets, got []"
        with pytest.raises(ValueError, match=r"^choice must be 'round_robin' or 'random'"):
            Workload(client, ["n1"], choice="sticky")
        workload = Workload(client, ["n1"])
        with pytest.raises(
            ValueError, match=r"^an open-ended pattern needs a duration to run\(\)$"
        ):
            await workload.run(steady(10))
        await workload.start(steady(10))
        with pytest.raises(
            RuntimeError, match=r"^the workload is already started; stop\(\) it first$"
        ):
            await workload.start(steady(10))
        await workload.stop()
    finally:
        await client.aclose()


async def test_a_requester_that_raises_is_recorded_as_error(node: StandinNode) -> None:
    async with _workload(node, ("n1",)) as workload:
        workload.targets = ("n1", "ghost")  # not a node the client knows
        history = await workload.run(steady(100, 0.1), "allow")
    ghost = {op.detail for op in history.ops if op.target == "ghost"}
    assert ghost == {"requester raised ValueError(\"unknown target 'ghost' (known: n1)\")"}
    assert {op.outcome for op in history.ops if op.target == "n1"} == {Outcome.OK}


async def test_history_round_trips_through_json(node: StandinNode) -> None:
    async with _workload(node, ("n1", "n2")) as workload:
        history = await workload.run(steady(100, 0.2), uniform(["allow", "block", "boom"]))
    again = History.from_json(history.to_json())
    assert again.ops == history.ops
    old_format = history.ops[0].to_dict()
    del old_format["gave_up"]  # written before the field existed: still readable
    assert History.from_json(json.dumps({"ops": [old_format]})).ops == (history.ops[0],)
    assert history.targets() == ("n1", "n2")
    rejected = history.select(target="n2", outcomes=Outcome.REJECTED)
    assert rejected and all(op.target == "n2" and op.key == "block" for op in rejected)
    first = min(op.send for op in history.ops)
    early = history.select(start=first, end=first + 0.05)
    assert 0 < len(early) < len(history)
    with pytest.raises(ValueError, match=r'^a history must be a JSON object with an "ops" list$'):
        History.from_json("[]")
    with pytest.raises(ValueError) as info:
        History.from_json('{"ops": [{"index": 1, "recv": null}]}')
    assert str(info.value) == "malformed op {'index': 1, 'recv': None}: missing field 'target'"
    bad = history.ops[0].to_dict() | {"outcome": "maybe"}
    with pytest.raises(ValueError, match=r"'maybe' is not a valid Outcome$"):
        History.from_json(json.dumps({"ops": [bad]}))


def test_history_times_are_epoch_seconds_on_a_monotonic_clock() -> None:
    history = History()
    now = history.clock.now()
    assert abs(now - time.time()) < 0.1
    mono = time.monotonic()
    assert history.clock.to_monotonic(history.clock.to_epoch(mono)) == pytest.approx(mono)
