"""Op mixes: what each arrival asks for, where it goes, and how the history records it.

The register mix is checked on its own (a pure stream of calls) and through a workload
against a register kept in this process: the requester here is the thing under test's
counterpart, so the history's values can be compared with what it really did.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json

import pytest

from pytest_operator import Call, OpKind, Outcome, Response, register_ops, requests, steady
from pytest_operator._history import History, Op
from pytest_operator._workload import Workload


def _calls(n: int, keys: tuple[str, ...] = ("a", "b"), **kw: object) -> list[Call]:
    mix = register_ops(**kw)  # type: ignore[arg-type]
    return list(itertools.islice(mix.calls(itertools.cycle(keys)), n))


def test_register_ops_mix_reads_unique_writes_and_cas_expecting_the_last_write() -> None:
    calls = _calls(2000, seed=7)
    kinds = collections.Counter(c.kind for c in calls)
    assert kinds[OpKind.READ] / 2000 == pytest.approx(0.5, abs=0.05)
    assert kinds[OpKind.WRITE] / 2000 == pytest.approx(0.3, abs=0.05)
    assert kinds[OpKind.CAS] / 2000 == pytest.approx(0.2, abs=0.05)
    written = [c.value for c in calls if c.kind != OpKind.READ]
    assert all(v is not None for v in written)
    assert len(set(written)) == len(written)  # every value written once
    assert all(c.value is None and c.expected is None for c in calls if c.kind == OpKind.READ)
    last: dict[str, str] = {}
    for c in calls:
        if c.kind == OpKind.CAS:
            assert c.expected == last.get(c.key)
        if c.value is not None:
            last[c.key] = c.value
    assert _calls(50, seed=7) == calls[:50]  # seeded: the same seed, the same calls
    assert _calls(50, seed=8) != calls[:50]


def test_register_ops_refuses_bad_weights_and_targets() -> None:
    with pytest.raises(ValueError, match="read must be a finite weight >= 0, got -1"):
        register_ops(read=-1)
    with pytest.raises(ValueError, match="needs a positive weight"):
        register_ops(read=0, write=0, cas=0)
    with pytest.raises(TypeError, match="takes a list of targets, got the string 'n1'"):
        register_ops(reads_on="n1")
    with pytest.raises(ValueError, match="reads_on must be a non-empty list"):
        register_ops(reads_on=[])


class Register:
    """A requester over a dict: reads, writes, compare-and-set, ``delay`` seconds each."""

    def __init__(self, delay: float = 0.001) -> None:
        self.values: dict[str, str] = {}
        self.delay = delay
        self.seen: list[tuple[str, Call]] = []

    async def __call__(self, target: str, call: Call) -> Response:
        self.seen.append((target, call))
        await asyncio.sleep(self.delay)
        current = self.values.get(call.key)
        if call.kind == OpKind.READ:
            return Response(Outcome.OK, result=current)
        if call.kind == OpKind.WRITE and call.value is not None:
            self.values[call.key] = call.value
            return Response(Outcome.OK)
        if call.kind == OpKind.CAS and call.value is not None:
            if current != call.expected:
                return Response(Outcome.REJECTED, result=current)
            self.values[call.key] = call.value
            return Response(Outcome.OK)
        return Response(Outcome.ERROR, f"cannot do {call.kind}")

    async def aclose(self) -> None:
        return None


async def test_a_workload_records_kinds_values_and_results_of_register_ops() -> None:
    register = Register()
    history = History()
    async with Workload(register, ["n1", "n2"], history, ops=register_ops(seed=3)) as wl:
        await wl.run(steady(400, 0.5), ["k1", "k2"])
    ops = history.ops
    assert len(ops) == 200
    assert {op.kind for op in ops} == {OpKind.READ, OpKind.WRITE, OpKind.CAS}
    for op in ops:
        call = Call(op.key, op.kind, op.value, op.expected)
        assert (op.target, call) in register.seen
    reads = [op for op in ops if op.kind == OpKind.READ and op.result is not None]
    assert reads, "some read saw a written value"
    written = {op.value for op in ops if op.kind != OpKind.READ}
    assert all(op.result in written for op in reads)
    failed = [op for op in ops if op.kind == OpKind.CAS and op.outcome is Outcome.REJECTED]
    assert all(op.result != op.expected for op in failed)
    again = History.from_json(history.to_json()).ops
    assert again == ops  # kinds and values survive JSON


async def test_reads_and_writes_can_be_sent_to_different_targets() -> None:
    register = Register()
    mix = register_ops(reads_on=["n3"], writes_on=["n1", "n2"])
    async with Workload(register, ["n1", "n2", "n3"], ops=mix) as wl:
        await wl.run(steady(400, 0.5), "k")
    by_kind = collections.defaultdict(set)
    for target, call in register.seen:
        by_kind[call.kind].add(target)
    assert by_kind[OpKind.READ] == {"n3"}
    assert by_kind[OpKind.WRITE] == {"n1", "n2"}
    assert by_kind[OpKind.CAS] <= {"n1", "n2"}
    with pytest.raises(ValueError, match=r"routes read calls to unknown target\(s\) n9"):
        await Workload(register, ["n1"]).start(
            steady(10, 1.0), "k", ops=register_ops(reads_on=["n9"])
        )


async def test_ops_in_flight_are_announced_and_resolved() -> None:
    register = Register(delay=0.3)
    history = History()
    wl = Workload(register, ["n1"], history, ops=register_ops())
    try:
        await wl.start(steady(100, 0.2), "k")
        await asyncio.sleep(0.25)
        pending = history.in_flight()
        assert pending, "requests answered after 0.3 s are in flight at 0.25 s"
        assert all(op.outcome is Outcome.TIMEOUT and op.recv is None for op in pending)
        assert {op.kind for op in pending} <= {OpKind.READ, OpKind.WRITE, OpKind.CAS}
        since = history.pending_since()
        assert since is not None and since == min(op.send for op in pending)
        await wl.wait()
    finally:
        await wl.stop()
    assert history.in_flight() == () and history.pending_since() is None
    assert len(history) == 20
    assert sorted(op.index for op in history.ops) == list(range(20))


def test_requests_mix_is_the_default_and_old_histories_still_load() -> None:
    calls = list(itertools.islice(requests().calls(iter(["a", "b"])), 2))
    assert calls == [Call("a"), Call("b")]
    old = {
        "index": 0,
        "target": "n1",
        "key": "k",
        "scheduled": 1.0,
        "send": 1.0,
        "recv": 1.1,
        "outcome": "ok",
        "detail": None,
    }
    op = History.from_json(json.dumps({"ops": [old]})).ops[0]
    assert op.kind == OpKind.REQUEST and op.value is op.expected is op.result is None
    assert "kind" not in op.to_dict()  # a request's op writes as it always did
    own = Op.from_dict({**old, "kind": "append", "value": "x"})
    assert own.kind == "append" and own.value == "x"
