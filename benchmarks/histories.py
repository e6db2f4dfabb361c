"""Register histories for the checker's benchmark and cross-check, and Porcupine's view of them.

:func:`generate` simulates C clients against a *linearizable* register per key: each client
sends one op at a time (reads, writes of unique values and compare-and-sets in a 50/30/20
mix), each op gets an invoke time, a latency (a few ms, some long-tailed), a linearization
point inside ``[send, recv]``, and its result from the register's state at that point, so
the history is linearizable by construction. A given fraction of ops are indeterminate
(the client gave up: ``TIMEOUT``, ``recv`` None, ``gave_up`` set); such a write or CAS takes
effect with probability 1/2 at a point after its send (possibly after the client gave up),
or never. ``anomaly=True`` then makes one read stale: it returns a value that a write
completed before the read began had overwritten, so no linearization can explain it.

:func:`porcupine_document` and :func:`run_porcupine` hand the same ops to
tools/porcupine-check (Porcupine, the Go checker etcd's robustness tests use), built with::

    cd tools/porcupine-check && go build -o ../../.bin/porcupine-check .

Times are whole microseconds after a fixed epoch and never shared by two events, so float
seconds and Porcupine's int64 nanoseconds order every pair of events the same way.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pytest_operator._history import Op, OpKind, Outcome

ROOT = Path(__file__).resolve().parents[1]
PORCUPINE = ROOT / ".bin" / "porcupine-check"
BUILD_PORCUPINE = "cd tools/porcupine-check && go build -o ../../.bin/porcupine-check ."

EPOCH = 1_700_000_000.0  # the generated histories' t = 0, epoch seconds
MIX = ((OpKind.READ, 0.5), (OpKind.WRITE, 0.3), (OpKind.CAS, 0.2))
TARGETS = ("node-1", "node-2", "node-3")
INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Spec:
    """What to generate. Latencies are log-normal around ``latency_ms`` (a few ms); a
    ``tail`` fraction of ops is 5 to 50 times slower. Indeterminate ops are exactly
    ``round(indeterminate * ops)`` ops, chosen at random; the client gives up on each after
    ``timeout_s``."""

    ops: int
    keys: int = 5
    clients: int = 10
    indeterminate: float = 0.05
    anomaly: bool = False
    seed: int = 0
    latency_ms: float = 2.0
    think_ms: float = 1.0
    tail: float = 0.05
    timeout_s: float = 0.5

    def __post_init__(self) -> None:
        if self.ops < 1 or self.keys < 1 or self.clients < 1:
            raise ValueError(f"ops, keys and clients must be >= 1: {self}")
        if not 0.0 <= self.indeterminate <= 1.0:
            raise ValueError(f"indeterminate is a fraction in [0, 1], got {self.indeterminate}")


@dataclass(frozen=True, slots=True)
class Generated:
    """A generated history; ``stale`` is the read made stale (``Spec.anomaly``), with the
    value it really returned in ``stale_was``."""

    spec: Spec
    ops: tuple[Op, ...]
    stale: Op | None = None
    stale_was: str | None = None

    @property
    def indeterminate(self) -> int:
        return sum(1 for op in self.ops if op.outcome is Outcome.TIMEOUT)


@dataclass(slots=True)
class _Planned:
    """One op while the simulation runs (times in whole microseconds)."""

    index: int
    client: int
    key: str
    kind: OpKind
    send: int
    recv: int | None  # None: indeterminate
    point: int | None  # the linearization point; None: never takes effect
    value: str | None = None
    expected: str | None = None
    result: str | None = None
    outcome: Outcome = Outcome.OK


class _Ticks:
    """Hands out whole-microsecond times, each at most once (no two events share a time)."""

    def __init__(self) -> None:
        self._used: set[int] = set()

    def take(self, at: float) -> int:
        tick = max(0, round(at))
        while tick in self._used:
            tick += 1
        self._used.add(tick)
        return tick


def generate(spec: Spec) -> Generated:
    """A register history as :class:`Spec` describes (see the module's doc): linearizable,
    unless ``spec.anomaly`` asks for one stale read."""
    rng = random.Random(spec.seed)
    planned = _plan(spec, rng)
    _linearize(planned)
    stale: _Planned | None = None
    was: str | None = None
    if spec.anomaly:
        stale, was = _inject_stale_read(planned, rng)
    ops = tuple(_to_op(p, spec) for p in sorted(planned, key=lambda p: _resolved(p, spec)))
    if stale is None:
        return Generated(spec, ops)
    return Generated(spec, ops, next(op for op in ops if op.index == stale.index), was)


def _plan(spec: Spec, rng: random.Random) -> list[_Planned]:
    """Who sends what when: each client sends its next op a think time after its last one
    resolved; the op's latency and linearization point are drawn here, its result later."""
    ticks = _Ticks()
    lost = set(rng.sample(range(spec.ops), round(spec.indeterminate * spec.ops)))
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    free = [(rng.uniform(0, spec.think_ms * 1000), c) for c in range(spec.clients)]
    heapq.heapify(free)
    planned: list[_Planned] = []
    values = 0
    for index in range(spec.ops):
        at, client = heapq.heappop(free)
        send = ticks.take(at)
        kind = rng.choices(kinds, weights)[0]
        key = f"k{rng.randrange(spec.keys) + 1}"
        value = None
        if kind is not OpKind.READ:
            values += 1
            value = str(values)
        if index in lost:
            timeout = spec.timeout_s * 1e6
            point = None
            if kind is not OpKind.READ and rng.random() < 0.5:
                point = ticks.take(send + rng.uniform(1, 1.5 * timeout))
            op = _Planned(index, client, key, kind, send, None, point, value=value)
            op.outcome = Outcome.TIMEOUT
            done = send + timeout
        else:
            latency = rng.lognormvariate(math.log(spec.latency_ms * 1000), 0.5)
            if rng.random() < spec.tail:
                latency *= rng.uniform(5, 50)
            latency = max(20.0, latency)
            point = ticks.take(send + rng.uniform(1, latency - 1))
            recv = ticks.take(max(send + latency, point + 1))
            op = _Planned(index, client, key, kind, send, recv, point, value=value)
            done = recv
        planned.append(op)
        heapq.heappush(free, (done + rng.expovariate(1 / (spec.think_ms * 1000)), client))
    return planned


def _linearize(planned: list[_Planned]) -> None:
    """Apply the ops in linearization-point order to one register per key, filling in each
    op's result, a CAS's expected value and outcome. A client's CAS expects the last value
    it wrote or read on that key (None before any), as it knew when it sent the CAS: its
    determinate ops before it all took effect before they completed, so before that send."""
    events: list[tuple[int, bool, _Planned]] = [(p.send, False, p) for p in planned]
    events += [(p.point, True, p) for p in planned if p.point is not None]
    state: dict[str, str | None] = {}
    seen: dict[tuple[int, str], str | None] = {}
    for _, takes_effect, p in sorted(events, key=lambda e: e[0]):
        mine = (p.client, p.key)
        if not takes_effect:
            if p.kind is OpKind.CAS:
                p.expected = seen.get(mine)
            continue
        current = state.get(p.key)
        if p.kind is OpKind.READ:
            p.result = current
            seen[mine] = current
        elif p.kind is OpKind.WRITE:
            state[p.key] = p.value
            if p.recv is not None:
                seen[mine] = p.value
        elif current == p.expected:
            state[p.key] = p.value
            if p.recv is not None:
                seen[mine] = p.value
        elif p.recv is not None:
            p.outcome = Outcome.REJECTED
            p.result = current
            seen[mine] = current


def _inject_stale_read(planned: list[_Planned], rng: random.Random) -> tuple[_Planned, str | None]:
    """Make one read stale: a read R returns the value an earlier write A wrote, where a
    write B that overwrote it was sent after A completed and completed before R was sent.
    Every linearization orders A < B < R, and values are unique, so R cannot see A's value.
    Returns R and the value it really returned; ValueError when the history has no such
    triple (too few ops)."""
    writes: dict[str, list[_Planned]] = {}
    for p in planned:
        if p.recv is not None and p.outcome is Outcome.OK and p.kind is not OpKind.READ:
            writes.setdefault(p.key, []).append(p)
    reads = [p for p in planned if p.kind is OpKind.READ and p.recv is not None]
    rng.shuffle(reads)
    for read in reads:
        done = [w for w in writes.get(read.key, ()) if w.recv is not None and w.recv < read.send]
        for newer in sorted(done, key=lambda w: -w.send):
            older = [w for w in done if w.recv is not None and w.recv < newer.send]
            if older:
                was = read.result
                read.result = rng.choice(older).value
                return read, was
    raise ValueError("no read can be made stale: the history is too short; generate more ops")


def _resolved(p: _Planned, spec: Spec) -> float:
    return p.recv if p.recv is not None else p.send + spec.timeout_s * 1e6


def _to_op(p: _Planned, spec: Spec) -> Op:
    send = EPOCH + p.send / 1e6
    return Op(
        index=p.index,
        target=TARGETS[p.client % len(TARGETS)],
        key=p.key,
        scheduled=send,
        send=send,
        recv=None if p.recv is None else EPOCH + p.recv / 1e6,
        outcome=p.outcome,
        gave_up=spec.timeout_s if p.recv is None else None,
        kind=p.kind,
        value=p.value,
        expected=p.expected,
        result=p.result,
    )


# -- Porcupine (tools/porcupine-check) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PorcupineResult:
    """Porcupine's verdict: ``result`` is Ok, Illegal or Unknown (its timeout cut the search
    short), per key too; ``elapsed_s`` is its check time (not the JSON nor the process),
    ``wall_s`` the whole call from Python."""

    result: str
    per_key: dict[str, str]
    elapsed_s: float
    wall_s: float

    @property
    def valid(self) -> bool | None:
        """True (linearizable), False (not), None (Unknown: no verdict)."""
        return {"Ok": True, "Illegal": False}.get(self.result)


def _porcupine_record(op: Op, t0: float) -> dict[str, object] | None:
    """One op as tools/porcupine-check reads it; None for an op that surely had no effect
    and saw nothing (an error, a refused read or write, a CAS refused without the current
    value): the contract's semantics, as the checker reads them."""
    kind = OpKind(op.kind)  # ValueError: not a register kind
    if op.outcome is Outcome.TIMEOUT:
        status, ret = "unknown", INT64_MAX
    elif op.outcome is Outcome.OK:
        status = "ok"
    elif op.outcome is Outcome.REJECTED and kind is OpKind.CAS and op.result is not None:
        status = "fail"
    else:
        return None
    if status != "unknown":
        if op.recv is None:
            raise ValueError(f"op {op.index} is {op.outcome} but has no recv time")
        ret = round((op.recv - t0) * 1e9)
    if kind is OpKind.REQUEST:
        raise ValueError(f"op {op.index}: a request is not a register op (read, write, cas)")
    return {
        "client": TARGETS.index(op.target) if op.target in TARGETS else 0,
        "kind": kind.value,
        "value": op.value,
        "expected": op.expected,
        "result": op.result,
        "status": status,
        "call": round((op.send - t0) * 1e9),
        "return": ret,
    }


def porcupine_document(ops: Iterable[Op], *, initial: str | None = None) -> dict[str, object]:
    """The JSON document tools/porcupine-check reads: ops per key, times in int64 ns after
    the earliest send, an indeterminate op open-ended (return = INT64_MAX)."""
    ops = tuple(ops)
    t0 = min((op.send for op in ops), default=0.0)
    keys: dict[str, list[dict[str, object]]] = {}
    for op in sorted(ops, key=lambda op: op.send):
        record = _porcupine_record(op, t0)
        if record is not None:
            keys.setdefault(op.key, []).append(record)
    return {"keys": {key: {"initial": initial, "ops": rows} for key, rows in keys.items()}}


def run_porcupine(
    ops: Iterable[Op],
    *,
    initial: str | None = None,
    timeout_s: float = 60.0,
    binary: Path = PORCUPINE,
) -> PorcupineResult:
    """Judge ``ops`` with Porcupine; ``timeout_s`` bounds its search (then Unknown)."""
    document = json.dumps(porcupine_document(ops, initial=initial))
    began = time.perf_counter()
    done = subprocess.run(
        [str(binary), f"-timeout={timeout_s}s"],
        input=document,
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
        check=False,
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{binary} exited with {done.returncode}: {done.stderr.strip()}")
    raw = json.loads(done.stdout)
    return PorcupineResult(
        result=str(raw["result"]),
        per_key={str(k): str(v["result"]) for k, v in raw["per_key"].items()},
        elapsed_s=float(raw["elapsed_s"]),
        wall_s=wall,
    )
