"""Linearizability of a key-value history against a register model (Knossos' search, per key).

The question, as Jepsen asks it: is there one total order of the ops clients saw that
respects real time (an op that completed before another was sent comes first) and in which
every op does what one register would do (a read returns the last value written, a
compare-and-set succeeds only on its expected value)? An indeterminate op (``TIMEOUT``, no
answer) may take effect at any moment after its send, or never.

How it is decided, per key (a register history is linearizable iff each key's is):

1. *Exact preprocessing.* Ops that surely had no effect and saw nothing are dropped
   (errors, refused reads and writes, a refused CAS that did not say what it saw), and so is
   every indeterminate read (an unknown answer constrains nothing). An indeterminate write
   or CAS is *fed* to the search only when the value it writes is observed by a fed op (a
   read returned it, a refused CAS reported it, a CAS expected it), to a fixpoint. This is
   exact: removing an unobserved write from a linearization changes the register only in a
   stretch where no op looks at it. A fed indeterminate op must take effect before the
   first op that observed its value completed, when it is the only op that could have
   written that value by then (and it is not the initial value); otherwise it stays
   open-ended. Uniqueness is checked, not assumed.
2. *Just-in-time search* (Knossos' ``linear``; Lowe's JIT linearization). Events in time
   order (a send is an invoke, an answer a completion; equal times are concurrent, so a
   send at the very time another op answered may come before it), over a set of
   configurations (register state, ops linearized but not yet completed). At a completion
   each configuration linearizes pending ops until the completing one is in; no
   configuration left: not linearizable, and that op is the culprit. Prunings, each a
   dominance argument: a read is linearized as soon as the register holds its value (it
   changes nothing, so having it in only helps); a blind write is never linearized right
   after another blind write nobody saw: the configuration instead remembers the first as
   *killable* (it may have been overwritten unseen, or still be pending), which removes
   the 2^n blow-up of concurrent writes; an open-ended op nobody saw is only linearized
   right before a CAS that consumes its value (otherwise it could as well happen later, or
   never); and a configuration that left open-ended ops out dominates one that put them in
   (ops that do the same being interchangeable).
3. *The explanation.* The first op of a key that no configuration explains is the
   culprit; :mod:`pytest_operator._anomalies` turns it into an :class:`Anomaly`: the
   smallest stretch of ops found that is still not linearizable (the proof), the values
   the culprit could have seen, and the shape's name (stale read, lost write...).

This module holds the model (:class:`Model`, :class:`Register`, :data:`UNKNOWN`), the
preprocessing and the search, and the entry points: :func:`check` judges a whole history
into a :class:`CheckResult`; :class:`LinearizabilityWatch` judges a growing one every
monitor tick, incrementally: each key keeps its search between ticks, saved every half
second of history, and goes back to a saved state when an op arrives that changes what
was already searched (a timed-out write whose value is seen only now).

Why not Porcupine (or Knossos) itself: the watch runs inside the event loop every tick and
needs the search state kept between ticks; a failure must come with its smallest stretch
and what the culprit could have seen; and with unique written values the exact
preprocessing above keeps the search small enough for pure Python (10,000 ops in well
under a second). tests/checkers cross-check the verdicts against a brute-force search, and
against Porcupine on random histories.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import time
from bisect import bisect_left, insort
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from pytest_operator._history import History, Op, OpKind, Outcome
from pytest_operator._signals import SafetyViolation
from pytest_operator._workload import OpMix, register_ops

if TYPE_CHECKING:
    # Anomaly lives in _anomalies, which imports this module (explain is imported lazily)
    from pytest_operator._anomalies import Anomaly


INF: Final = math.inf
CHECKPOINT_EVERY_S: Final = 0.5
"""History seconds between a watch's saved search states (restart points)."""
MAX_CHECKPOINTS: Final = 512


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
"""The state after an anomaly: a model's ``step`` accepts any op once from it (a read
returns the state it saw), so the search resynchronises instead of failing forever."""


class Model(Protocol):
    """A sequential specification (Porcupine's ``Model``): what one object does, op by op.

    ``step`` returns the state after ``op`` took effect in ``state`` (with the outcome and
    result the op recorded), or None when it could not have. States are hashable and never
    None. ``step`` must also accept :data:`UNKNOWN` (see there)."""

    name: str
    kinds: frozenset[str]

    def init(self, initial: str | None) -> Hashable: ...

    def step(self, state: Hashable, op: Op) -> Hashable | None: ...

    def ops(self) -> OpMix: ...


class Register:
    """One key's value (``str``, or None: absent) under read, write and compare-and-set.

    Its state is the 1-tuple ``(value,)`` (a bare None would read as "cannot happen")."""

    name = "register"
    kinds: frozenset[str] = frozenset((OpKind.READ, OpKind.WRITE, OpKind.CAS))

    def init(self, initial: str | None) -> Hashable:
        return (initial,)

    def step(self, state: Hashable, op: Op) -> Hashable | None:
        kind = op.kind
        if kind == OpKind.WRITE:
            return (op.value,)
        if kind == OpKind.READ:
            return (op.result,) if state is UNKNOWN or state == (op.result,) else None
        if kind == OpKind.CAS:
            if op.outcome is Outcome.REJECTED:
                if op.result is None:  # the compare failed against an unknown value
                    return state if state is UNKNOWN or state != (op.expected,) else None
                if op.result == op.expected:
                    return None
                return (op.result,) if state is UNKNOWN or state == (op.result,) else None
            return (op.value,) if state is UNKNOWN or state == (op.expected,) else None
        raise ValueError(_unknown_kind(self, op))

    def ops(self) -> OpMix:
        return register_ops()


def _unknown_kind(model: Model, op: Op) -> str:
    return (
        f"the {model.name} model cannot judge op {op.index} of kind {str(op.kind)!r}"
        f" (key {op.key!r}); it knows {', '.join(sorted(str(k) for k in model.kinds))}"
    )


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A whole history's verdict: ``anomalies`` holds the first anomaly of each bad key."""

    model: str
    valid: bool
    keys: int
    ops: int
    indeterminate: int
    anomalies: tuple[Anomaly, ...]
    elapsed_s: float

    def summary(self) -> str:
        head = (
            f"{self.ops} ops on {self.keys} keys ({self.indeterminate} indeterminate),"
            f" checked in {self.elapsed_s:.3f} s"
        )
        if self.valid:
            return f"linearizable ({self.model}): {head}"
        first = self.anomalies[0]
        return (
            f"NOT linearizable ({self.model}): {len(self.anomalies)} of {self.keys} keys bad;"
            f" {head}; first, {first.kind.value} on {first.key}: {first.describe()}"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "valid": self.valid,
                "keys": self.keys,
                "ops": self.ops,
                "indeterminate": self.indeterminate,
                "elapsed_s": self.elapsed_s,
                "anomalies": [a.to_dict() for a in self.anomalies],
            }
        )


# ---------------------------------------------------------------- what an op does


OBSERVER: Final = 0  # changes nothing; needs the register to hold one value
BLIND: Final = 1  # a write: its result does not depend on the state
OTHER: Final = 2


def value_written(op: Op) -> tuple[bool, str | None]:
    """Whether the op (if it took effect) wrote a value, and which (register semantics)."""
    if op.kind == OpKind.WRITE and op.outcome in (Outcome.OK, Outcome.TIMEOUT):
        return True, op.value
    if op.kind == OpKind.CAS and op.outcome in (Outcome.OK, Outcome.TIMEOUT):
        return True, op.value
    return False, None


def value_observed(op: Op) -> tuple[bool, str | None]:
    """Whether the op (if it took effect) required the register to hold a value, and which."""
    if op.kind == OpKind.READ and op.outcome is Outcome.OK:
        return True, op.result
    if op.kind == OpKind.CAS:
        if op.outcome is Outcome.REJECTED:
            return op.result is not None, op.result
        if op.outcome in (Outcome.OK, Outcome.TIMEOUT):
            return True, op.expected
    return False, None


class _Fed:
    """One op the search judges."""

    __slots__ = ("done", "id", "inv", "needs", "op", "optional", "role")

    def __init__(self, op: Op, ident: int, role: int, optional: bool, needs: Hashable) -> None:
        self.op = op
        self.id = ident
        self.role = role
        self.optional = optional
        self.needs = needs  # an observer's required state
        self.inv: tuple[float, int, int, int] = (op.send, 0, op.index, ident)
        if optional:
            self.done = INF
        elif op.recv is not None:
            self.done = op.recv
        else:
            self.done = op.resolved if op.resolved is not None else INF

    def completion(self) -> tuple[float, int, int, int]:
        return (self.done, 2 if self.optional else 1, self.op.index, self.id)


def _role(op: Op, exact: bool) -> tuple[int, bool] | None:
    """How the search treats an op: (role, optional), or None when it is dropped."""
    if op.outcome is Outcome.ERROR:
        return None
    optional = op.outcome is Outcome.TIMEOUT
    if not exact:
        return OTHER, optional
    kind = op.kind
    if kind == OpKind.READ:
        return (OBSERVER, False) if op.outcome is Outcome.OK else None
    if kind == OpKind.WRITE:
        return None if op.outcome is Outcome.REJECTED else (BLIND, optional)
    if op.outcome is Outcome.REJECTED:  # a CAS whose compare failed
        if op.result is None:
            return None
        return (OTHER, False) if op.result == op.expected else (OBSERVER, False)
    return OTHER, optional


# ---------------------------------------------------------------- the search

_EMPTY: Final[frozenset[int]] = frozenset()
_Config = tuple[Hashable, frozenset[int], frozenset[int]]
"""(state, ops linearized and not completed yet, killable blind writes)."""


class _Search:
    """The set of configurations at one point of the event stream, and the pending ops."""

    __slots__ = ("blind", "configs", "mutators", "observers", "pending", "step")

    def __init__(self, model: Model, state: Hashable) -> None:
        self.step = model.step
        self.configs: list[_Config] = [(state, _EMPTY, _EMPTY)]
        self.pending: dict[int, _Fed] = {}
        self.mutators: dict[int, _Fed] = {}
        self.observers: dict[Hashable, set[int]] = {}
        self.blind: set[int] = set()

    def copy(self) -> _Search:
        other = _Search.__new__(_Search)
        other.step = self.step
        other.configs = list(self.configs)
        other.pending = dict(self.pending)
        other.mutators = dict(self.mutators)
        other.observers = {state: set(ids) for state, ids in self.observers.items()}
        other.blind = set(self.blind)
        return other

    def invoke(self, f: _Fed) -> None:
        self.pending[f.id] = f
        if f.role == OBSERVER:
            self.observers.setdefault(f.needs, set()).add(f.id)
            needs, one = f.needs, frozenset((f.id,))
            self.configs = [
                (s, lin | one, kill) if s == needs else (s, lin, kill)
                for s, lin, kill in self.configs
            ]
            return
        self.mutators[f.id] = f
        if f.role == BLIND and f.done < INF:  # an open-ended write never needs killing
            self.blind.add(f.id)

    def complete(self, f: _Fed) -> bool:
        """Keep the configurations in which ``f`` is linearized; False when none is left."""
        fid = f.id
        if fid not in self.pending:
            return False
        new: set[_Config] = set()
        for cfg in self.configs:
            s, lin, kill = cfg
            if fid in lin:
                new.add((s, lin - {fid}, kill))
                continue
            if fid in kill:  # it was overwritten unseen
                new.add((s, lin, kill - {fid}))
            new.update(self._expand(cfg, f))
        del self.pending[fid]
        self.mutators.pop(fid, None)
        self.blind.discard(fid)
        if f.role == OBSERVER:
            ids = self.observers.get(f.needs)
            if ids is not None:
                ids.discard(fid)
                if not ids:
                    del self.observers[f.needs]
        if not new:
            return False
        self.configs = list(new) if len(new) == 1 else self._prune(new)
        return True

    def _expand(self, cfg: _Config, c: _Fed) -> list[_Config]:
        """Configurations reachable from ``cfg`` by linearizing pending ops, ending with
        ``c`` (JIT: ops after it can wait).

        Two kinds of step are skipped as covered by others: a blind write right after a
        blind write that nobody saw (the first stays killable instead), and anything but
        a CAS right after an open-ended op nobody saw (it could as well never happen, or
        happen later, right before the op that sees its value)."""
        out: list[_Config] = []
        cid, step, observers, blind = c.id, self.step, self.observers, self.blind
        start = (cfg[0], cfg[1], cfg[2], _FREE)
        stack = [start]
        seen = {start}
        while stack:
            s, lin, kill, after = stack.pop()
            candidates = self.pending if s is UNKNOWN else self.mutators
            for mid, m in candidates.items():
                if mid in lin:
                    continue
                role = m.role
                if after != _FREE and (role != OTHER if after == _UNSEEN_OPEN else role == BLIND):
                    continue
                s2 = step(s, m.op)
                if s2 is None:
                    continue
                lin2 = lin | {mid}
                if role == BLIND:
                    kill2 = frozenset(b for b in blind if b not in lin2)
                else:
                    kill2 = kill - {mid} if mid in kill else kill
                ids = observers.get(s2)
                more = ids - lin2 if ids else None
                if more:
                    lin2 = lin2 | more
                if cid in lin2:
                    out.append((s2, lin2 - {cid}, kill2))
                    continue
                if more:
                    mode = _FREE
                elif m.done == INF:
                    mode = _UNSEEN_OPEN
                else:
                    mode = _UNSEEN_WRITE if role == BLIND else _FREE
                node = (s2, lin2, kill2, mode)
                if node not in seen:
                    seen.add(node)
                    stack.append(node)
        return out

    def _prune(self, configs: set[_Config]) -> list[_Config]:
        """Drop dominated configurations: same state and same determinate ops in, and
        another leaves out more open-ended ops and keeps more writes killable. Open-ended
        ops that do the same (same kind and values) are interchangeable."""
        inf = frozenset(fid for fid, f in self.pending.items() if f.done == INF)
        if not inf:
            return _prune_kill(configs)
        groups: dict[tuple[Hashable, frozenset[int]], dict[object, _Config]] = {}
        for s, lin, kill in configs:
            opt, kill = lin & inf, kill - inf
            alike = (tuple(sorted(_signature(self.pending[i].op) for i in opt)), kill)
            members = groups.setdefault((s, lin - inf), {})
            kept = members.get(alike)
            if kept is None or sorted(opt) < sorted(kept[1] & inf):
                members[alike] = (s, lin, kill)
        out: list[_Config] = []
        for (_, fin), members in groups.items():
            for s, lin, kill in members.values():
                opt = lin - fin
                if not any(
                    (o2 := l2 - fin) != opt and o2 <= opt and k2 >= kill
                    for _, l2, k2 in members.values()
                ):
                    out.append((s, lin, kill))
        return out


_FREE: Final = 0
_UNSEEN_WRITE: Final = 1  # the last step was a blind write nobody saw
_UNSEEN_OPEN: Final = 2  # the last step was an open-ended op nobody saw


def _signature(op: Op) -> tuple[str, str, str, str]:
    """What an op does, comparable (None written as ``"-"``, a value as ``"=value"``)."""
    return (str(op.kind), str(op.outcome), _text(op.value), _text(op.expected))


def _text(value: str | None) -> str:
    return "-" if value is None else "=" + value


def _prune_kill(configs: set[_Config]) -> list[_Config]:
    groups: dict[tuple[Hashable, frozenset[int]], list[frozenset[int]]] = {}
    for s, lin, kill in configs:
        groups.setdefault((s, lin), []).append(kill)
    out: list[_Config] = []
    for (s, lin), kills in groups.items():
        for kill in kills:
            if len(kills) == 1 or not any(k2 > kill for k2 in kills):
                out.append((s, lin, kill))
    return out


# ---------------------------------------------------------------- one key, incrementally

_Key = tuple[float, int, int, int]
"""An event's place: (time, 0 invoke | 1 completion | 2 an open op's deadline, index, id)."""
_START: Final[_Key] = (-INF, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Failure:
    """The first op of a segment that no configuration explains (``op``, completed ``at``),
    with what :func:`pytest_operator._anomalies.explain` reruns the search on."""

    op: Op
    at: float
    ops: tuple[Op, ...]  # the segment's fed ops (the stretch is found among them)
    state: Hashable  # the segment's initial state


class KeyRun:
    """The search over one key's ops, fed as they arrive and advanced to a horizon.

    A *segment* starts at the beginning, or right after an anomaly whose culprit wrote (a
    CAS on a stale value), from :data:`UNKNOWN`; a culprit that only read is dropped and
    the segment goes on.
    When an op arrives that changes what was already searched (an indeterminate write
    observed late must now be fed), the search restarts from a saved state before it."""

    def __init__(
        self,
        model: Model,
        initial: str | None,
        *,
        checkpoints: bool = False,
        state: Hashable | None = None,
    ) -> None:
        self.model = model
        self.exact = isinstance(model, Register)
        self.initial = initial
        self.state: Hashable = model.init(initial) if state is None else state
        self.ops: list[Op] = []
        self.fed: list[_Fed] = []
        self.by_send: list[tuple[float, int, int]] = []
        self.producers: dict[str | None, list[_Fed]] = {}
        self.observers: dict[str | None, list[_Fed]] = {}
        self.waiting: dict[str | None, list[Op]] = {}
        self.heap: list[_Key] = []
        self.base: _Key = _START
        self.last: _Key = _START
        self.search = _Search(model, self.state)
        self.dead: set[int] = set()
        self.restart_at: _Key | None = None
        self.checkpoints: list[tuple[_Key, _Search]] | None = [] if checkpoints else None
        self.next_checkpoint = -INF

    # -- feeding

    def add(self, op: Op) -> None:
        self.ops.append(op)
        role = _role(op, self.exact)
        if role is None:
            return
        if role[1] and self.exact and not self.observers.get(op.value):
            self.waiting.setdefault(op.value, []).append(op)
            return
        self._feed(op, role)

    def _feed(self, first: Op, first_role: tuple[int, bool]) -> None:
        work = [(first, first_role)]
        touched: set[str | None] = set()
        while work:
            op, (role, optional) = work.pop()
            needs: Hashable = (op.result,) if role == OBSERVER else None
            f = _Fed(op, len(self.fed), role, optional, needs)
            self.fed.append(f)
            insort(self.by_send, (op.send, op.index, f.id))
            self._push(f.inv, f)
            if f.done < INF:
                self._push(f.completion(), f)
            if not self.exact:
                continue
            produces, value = value_written(op)
            if produces:
                self.producers.setdefault(value, []).append(f)
                touched.add(value)
            observes, seen = value_observed(op)
            if observes:
                watchers = self.observers.setdefault(seen, [])
                watchers.append(f)
                touched.add(seen)
                if len(watchers) == 1:
                    for late in self.waiting.pop(seen, ()):
                        late_role = _role(late, True)
                        assert late_role is not None
                        work.append((late, late_role))
        if touched:
            self._refresh(touched)

    def _refresh(self, values: set[str | None]) -> None:
        """Recompute the deadline of each open-ended write of these values (and of the
        writes whose values those CAS ops expected)."""
        work = list(values)
        while work:
            value = work.pop()
            for x in self.producers.get(value, ()):
                if not x.optional:
                    continue
                new = self._deadline(x)
                old = x.done
                if new == old:
                    continue
                old_key = x.completion()
                x.done = new
                if x.inv <= self.last and (old == INF or old_key <= self.last):
                    self._late(x.inv)
                if new < INF:
                    self._push(x.completion(), x)
                if x.op.kind == OpKind.CAS:
                    work.append(x.op.expected)

    def _deadline(self, x: _Fed) -> float:
        """When an open-ended op must have taken effect: when the first op observing its
        value completed, if no other op could have written that value by then."""
        value = x.op.value
        if value == self.initial:
            return INF
        first_other = min((p.op.send for p in self.producers[value] if p is not x), default=INF)
        best = INF
        for o in self.observers.get(value, ()):
            if o is not x and o.done < best and o.done < first_other:
                best = o.done
        return best

    def _push(self, key: _Key, f: _Fed) -> None:
        if key <= self.last:
            self._late(f.inv)
        heapq.heappush(self.heap, key)

    def _late(self, key: _Key) -> None:
        if self.restart_at is None or key < self.restart_at:
            self.restart_at = key

    # -- searching

    def advance(self, horizon: float, *, first_only: bool = False) -> list[Failure]:
        """Process every event before ``horizon``; the anomalies found, in time order."""
        if self.restart_at is not None:
            self._restart(self.restart_at)
        out: list[Failure] = []
        heap, fed = self.heap, self.fed
        while heap and heap[0][0] < horizon:
            key = heapq.heappop(heap)
            self.last = key
            t, typ, _, fid = key
            if fid in self.dead:
                continue
            f = fed[fid]
            if typ == 0:
                self.search.invoke(f)
            else:
                if f.done != t or (fid not in self.search.pending and f.inv < key):
                    continue  # a superseded deadline, or already completed
                if not self.search.complete(f):
                    out.append(self._fail(f, key))
                    if first_only:
                        heap.clear()
                        return out
            if self.checkpoints is not None and t >= self.next_checkpoint:
                self._checkpoint(key, t)
        return out

    def _fail(self, f: _Fed, key: _Key) -> Failure:
        base = self.base
        ops = tuple(
            g.op
            for g in self.fed
            if g.id not in self.dead and (g.inv > base or g.completion() > base)
        )
        failure = Failure(f.op, key[0], ops, self.state)
        self.dead.add(f.id)
        if f.role == OBSERVER:
            # An op that only looked (a read) changed nothing: the search goes on without
            # it, so the next op to contradict the register is judged against what the
            # others did, not against what this one saw. (Deleting an observer is safe:
            # an anomaly of the rest is an anomaly of the whole.)
            return failure
        pending = sorted(
            (g for g in self.search.pending.values() if g.id != f.id), key=lambda g: g.inv
        )
        self.base, self.state = key, UNKNOWN
        self.search = _Search(self.model, UNKNOWN)
        for g in pending:
            self.search.invoke(g)
        if self.checkpoints is not None:
            self.checkpoints.clear()
        return failure

    def _checkpoint(self, key: _Key, t: float) -> None:
        assert self.checkpoints is not None
        self.checkpoints.append((key, self.search.copy()))
        self.next_checkpoint = t + CHECKPOINT_EVERY_S
        if len(self.checkpoints) > MAX_CHECKPOINTS:
            half = len(self.checkpoints) // 2
            self.checkpoints[:half] = self.checkpoints[:half:2]

    def _restart(self, at: _Key) -> None:
        """Search again from the latest saved state before ``at`` (or the segment's start)."""
        self.restart_at = None
        saved = self.checkpoints if self.checkpoints is not None else []
        while saved and saved[-1][0] >= at:
            saved.pop()
        if saved:
            self.last, snapshot = saved[-1]
            self.search = snapshot.copy()
        else:
            self.last = self.base
            self.search = _Search(self.model, self.state)
            base = self.base
            for g in sorted(self.fed, key=lambda g: g.inv):
                if g.id not in self.dead and g.inv <= base < g.completion():
                    self.search.invoke(g)
        last = self.last
        heap: list[_Key] = []
        for fid in self.search.pending:
            g = self.fed[fid]
            if g.done < INF and g.completion() > last:
                heap.append(g.completion())
        for _, _, fid in self.by_send[bisect_left(self.by_send, (last[0],)) :]:
            g = self.fed[fid]
            if g.id in self.dead or g.inv <= last:
                continue
            heap.append(g.inv)
            if g.done < INF:
                heap.append(g.completion())
        heapq.heapify(heap)
        self.heap = heap
        self.next_checkpoint = -INF


# ---------------------------------------------------------------- entry points


def check(
    ops: Iterable[Op], model: Model | None = None, *, initial: str | None = None
) -> CheckResult:
    """Judge a whole history, key by key; ``initial`` is every key's value before the first
    op (None: absent). An op of a kind the model does not judge raises ValueError."""
    from pytest_operator._anomalies import explain  # here: _anomalies imports this module

    began = time.perf_counter()
    judge = model if model is not None else Register()
    by_key: dict[str, list[Op]] = {}
    count = indeterminate = 0
    for op in ops:
        if op.kind not in judge.kinds:
            raise ValueError(_unknown_kind(judge, op))
        by_key.setdefault(op.key, []).append(op)
        count += 1
        indeterminate += op.indeterminate
    anomalies: list[Anomaly] = []
    for key in sorted(by_key):
        run = KeyRun(judge, initial)
        for op in sorted(by_key[key], key=lambda op: (op.send, op.index)):
            run.add(op)
        found = run.advance(INF, first_only=True)
        if found:
            anomalies.append(explain(key, found[0], run))
    return CheckResult(
        model=judge.name,
        valid=not anomalies,
        keys=len(by_key),
        ops=count,
        indeterminate=indeterminate,
        anomalies=tuple(anomalies),
        elapsed_s=time.perf_counter() - began,
    )


class LinearizabilityWatch:
    """The incremental checker a monitor runs every tick over a growing history.

    Each :meth:`check` judges the ops up to the history's horizon (every op sent before
    it has resolved), doing work proportional to the ops new since the last tick. The
    horizon needs the workload to announce each op when sent (``History.invoked``): an
    op in flight that nobody announced may explain what another saw, and arrive too late
    to withdraw an anomaly already reported. An
    anomaly is reported as a :class:`SafetyViolation` for ``show_for`` seconds after it was
    found. The key's search then goes on without the culprit when it only read (a stale
    read), or from an unknown state when it wrote, so later anomalies are found too and
    each is judged against what the other ops did."""

    def __init__(
        self,
        history: History,
        model: Model | None = None,
        *,
        property: str = "linearizable",
        show_for: float = 3.0,
        initial: str | None = None,
    ) -> None:
        self._history = history
        self._model = model if model is not None else Register()
        self._property = property
        self._show_for = show_for
        self._initial = initial
        self._seen = 0
        self._keys: dict[str, KeyRun] = {}
        self._found: list[tuple[float, Anomaly, SafetyViolation]] = []

    @property
    def anomalies(self) -> tuple[Anomaly, ...]:
        """Every anomaly found so far, in the order found."""
        return tuple(a for _, a, _ in self._found)

    def check(self, now: float) -> tuple[SafetyViolation, ...]:
        """Judge what is new up to the horizon; the anomalies found in the last
        ``show_for`` seconds, as violations."""
        from pytest_operator._anomalies import AnomalyKind, explain  # they import this module

        horizon = self._history.pending_since()  # first: ops resolved after it are late
        if horizon is None:
            horizon = now
        ops = self._history.snapshot()
        for op in ops[self._seen :]:
            if op.kind not in self._model.kinds:
                raise ValueError(_unknown_kind(self._model, op))
            run = self._keys.get(op.key)
            if run is None:
                run = self._keys[op.key] = KeyRun(self._model, self._initial, checkpoints=True)
            run.add(op)
        self._seen = len(ops)
        for key in sorted(self._keys):
            run = self._keys[key]
            for failure in run.advance(horizon):
                anomaly = explain(key, failure, run)
                if anomaly.kind is AnomalyKind.LOST_WRITE:
                    # Mid-run, a write nobody has seen *yet* is not known to be lost: the
                    # read saw a value already overwritten, which is a stale read. Only
                    # the whole history can say a write was lost.
                    anomaly = dataclasses.replace(anomaly, kind=AnomalyKind.STALE_READ)
                violation = SafetyViolation(
                    self._property,
                    components=(anomaly.culprit.target,),
                    observed=1.0,
                    bound=0.0,
                    at=anomaly.at,
                    detail=anomaly.describe(),
                )
                self._found.append((now, anomaly, violation))
        return tuple(v for found, _, v in self._found if found <= now < found + self._show_for)
