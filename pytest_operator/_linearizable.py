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
3. *The smallest stretch.* On failure, ops are deleted while the culprit still fails, but
   only *safe* deletions: an op that writes nothing, or a write whose value no remaining
   op observes. Soundness: if the whole history had a linearization, deleting such an op
   from it leaves a linearization of the rest (the state changes only in the deleted
   write's stretch, where by assumption nothing looks at it), so a stretch that is not
   linearizable proves the whole history is not. The ops after the culprit go first, then
   the longest run of the oldest ops (so the stretch keeps the latest writes that explain
   it), then chunks, halving, down to one op at a time until no safe deletion keeps it.
   For a stale read that is the classic three: the write of the value read, the write
   that overwrote it before the read began, and the read.

:func:`check` judges a whole history; :class:`LinearizabilityWatch` judges a growing one
every monitor tick, incrementally: each key keeps its search between ticks, saved every
half second of history, and goes back to a saved state when an op arrives that changes
what was already searched (a timed-out write whose value is seen only now).

Why not Porcupine (or Knossos) itself: the watch runs inside the event loop every tick and
needs the search state kept between ticks; a failure must come with its smallest stretch
and what the culprit could have seen; and with unique written values the exact
preprocessing above keeps the search small enough for pure Python (10,000 ops in well
under a second). tests/checkers cross-check the verdicts against a brute-force search, and
against Porcupine on random histories.
"""

from __future__ import annotations

import enum
import heapq
import json
import math
import time
from bisect import bisect_left, insort
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

from pytest_operator._history import History, Op, OpKind, Outcome
from pytest_operator._signals import SafetyViolation
from pytest_operator._workload import OpMix, register_ops

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


class AnomalyKind(enum.StrEnum):
    STALE_READ = "stale-read"
    """A read (or refused CAS) saw a value already overwritten before it began, and the
    newer value was seen elsewhere."""
    LOST_WRITE = "lost-write"
    """An acknowledged write never became visible: a later read saw what it overwrote, and
    nobody ever saw it."""
    NEVER_WRITTEN = "never-written"
    """A read saw a value no operation wrote."""
    STALE_CAS = "stale-cas"
    """A CAS succeeded against a value that was no longer current."""
    NOT_LINEARIZABLE = "not-linearizable"
    """Any other shape."""


@dataclass(frozen=True, slots=True)
class Anomaly:
    """The first op of a key that no linearization explains (``at``: when it completed),
    what it could have seen instead, and the proof: ``stretch``, the smallest set of ops
    found that is not linearizable (in invoke order)."""

    key: str
    kind: AnomalyKind
    culprit: Op
    could_see: tuple[str | None, ...]
    stretch: tuple[Op, ...]
    at: float

    def describe(self, t0: float | None = None) -> str:
        """One sentence: who saw what, when, and why it is impossible. Times are seconds
        after ``t0`` when given, else the time of day (UTC) for epoch times."""
        c = self.culprit
        saw = _seen(c)
        span = _span(c.send, None if c.indeterminate else self.at, t0)
        newer = _newer(self)
        if c.kind == OpKind.CAS:
            verb = {Outcome.OK: "succeeded", Outcome.REJECTED: f"failed seeing {_show(saw)}"}
            did = f"CAS {c.key} {_show(c.expected)}->{_show(c.value)}"
            did += f" {verb.get(c.outcome, 'had no answer')}"
            noun = "CAS"
        else:
            did, noun = f"read {c.key} = {_show(saw)}", "read"
        who = f"{c.target} {did} at {span}"
        could = _alternatives(self.could_see)
        if self.kind is AnomalyKind.NEVER_WRITTEN:
            return f"{who}, but no op ever wrote {_show(saw)}; it could have seen {could}"
        if newer is not None and self.kind is not AnomalyKind.NOT_LINEARIZABLE:
            op, value, written = newer
            done = _time(_done(op), t0)
            if self.kind is AnomalyKind.LOST_WRITE:
                return (
                    f"{who}, but the acknowledged write of {_show(value)} (completed {done})"
                    f" had overwritten it before the {noun} began, and no op ever saw"
                    f" {_show(value)}: the write was lost"
                )
            how = "written" if written else f"seen by {op.target}'s {op.kind}"
            return (
                f"{who}, but {_show(value)} had been {how} (completed {done}) before the"
                f" {noun} began; it could have seen {could}"
            )
        return (
            f"{who}, which no linearization of the {len(self.stretch)} ops of its stretch"
            f" allows; it could have seen {could}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "kind": self.kind.value,
            "culprit": self.culprit.to_dict(),
            "could_see": list(self.could_see),
            "stretch": [op.to_dict() for op in self.stretch],
            "at": self.at,
            "description": self.describe(),
        }


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


def _show(value: str | None) -> str:
    return "absent" if value is None else repr(value)


def _alternatives(values: Sequence[str | None]) -> str:
    if not values:
        return "no value at all"
    shown = [_show(v) for v in values]
    return "only " + (shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1])


def _time(t: float, t0: float | None) -> str:
    if t0 is not None:
        return f"{t - t0:.3f} s"
    if t > 1e8:  # an epoch time: the time of day reads best beside logs
        secs, ms = divmod(round(t * 1000), 1000)
        return time.strftime("%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}"
    return f"{t:.3f} s"


def _span(start: float, end: float | None, t0: float | None) -> str:
    if end is None:
        return f"{_time(start, t0)} (no answer)"
    a, b = _time(start, t0), _time(end, t0)
    if a.endswith(" s") and b.endswith(" s"):
        return f"{a[:-2]}-{b}"
    return f"{a}-{b}"


def _done(op: Op) -> float:
    return op.recv if op.recv is not None else INF


def _seen(op: Op) -> str | None:
    """The value an op saw: a read's result, a refused CAS's report, a CAS's expected."""
    if op.kind == OpKind.CAS and op.outcome is not Outcome.REJECTED:
        return op.expected
    return op.result


def _newer(anomaly: Anomaly) -> tuple[Op, str | None, bool] | None:
    """The evidence that another value was current before the culprit began: the
    latest-completing determinate op of the stretch, done before the culprit's send, that
    wrote (True) or saw (False) a value other than the one the culprit saw."""
    c = anomaly.culprit
    saw = _seen(c)
    best: tuple[Op, str | None, bool] | None = None
    for op in anomaly.stretch:
        if op is c or op.indeterminate or not _done(op) < c.send:
            continue
        if best is not None and _done(op) <= _done(best[0]):
            continue
        produces, value = _produces(op)
        if produces and value != saw:
            best = (op, value, True)
            continue
        observes, value = _observes(op)
        if observes and value != saw:
            best = (op, value, False)
    return best


# ---------------------------------------------------------------- what an op does


OBSERVER: Final = 0  # changes nothing; needs the register to hold one value
BLIND: Final = 1  # a write: its result does not depend on the state
OTHER: Final = 2


def _produces(op: Op) -> tuple[bool, str | None]:
    """Whether the op (if it took effect) wrote a value, and which (register semantics)."""
    if op.kind == OpKind.WRITE and op.outcome in (Outcome.OK, Outcome.TIMEOUT):
        return True, op.value
    if op.kind == OpKind.CAS and op.outcome in (Outcome.OK, Outcome.TIMEOUT):
        return True, op.value
    return False, None


def _observes(op: Op) -> tuple[bool, str | None]:
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
class _Failure:
    op: Op
    at: float
    ops: tuple[Op, ...]  # the segment's fed ops (the stretch is found among them)
    state: Hashable  # the segment's initial state


class _KeyRun:
    """The search over one key's ops, fed as they arrive and advanced to a horizon.

    A *segment* starts at the beginning, or right after an anomaly from :data:`UNKNOWN`.
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
            produces, value = _produces(op)
            if produces:
                self.producers.setdefault(value, []).append(f)
                touched.add(value)
            observes, seen = _observes(op)
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

    def advance(self, horizon: float, *, first_only: bool = False) -> list[_Failure]:
        """Process every event before ``horizon``; the anomalies found, in time order."""
        if self.restart_at is not None:
            self._restart(self.restart_at)
        out: list[_Failure] = []
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

    def _fail(self, f: _Fed, key: _Key) -> _Failure:
        base = self.base
        ops = tuple(
            g.op
            for g in self.fed
            if g.id not in self.dead and (g.inv > base or g.completion() > base)
        )
        failure = _Failure(f.op, key[0], ops, self.state)
        self.dead.add(f.id)
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


# ---------------------------------------------------------------- explaining a failure


def _first_failure(
    ops: Iterable[Op], model: Model, initial: str | None, state: Hashable
) -> _Failure | None:
    run = _KeyRun(model, initial, state=state)
    for op in sorted(ops, key=lambda op: (op.send, op.index)):
        run.add(op)
    found = run.advance(INF, first_only=True)
    return found[0] if found else None


def _safe_part(chunk: Iterable[Op], current: Sequence[Op]) -> set[int]:
    """The largest part of ``chunk`` (as ``id()``s) that may be deleted soundly from
    ``current``: every op in it writes nothing, or a value no remaining op observes."""
    drop = {id(op): op for op in chunk}
    while True:
        observed = set()
        for op in current:
            if id(op) not in drop:
                observes, value = _observes(op)
                if observes:
                    observed.add(value)
        keep = [i for i, op in drop.items() if (p := _produces(op))[0] and p[1] in observed]
        if not keep:
            return set(drop)
        for i in keep:
            del drop[i]


def _minimize(
    ops: Sequence[Op],
    culprit: Op,
    end: float,
    model: Model,
    initial: str | None,
    state: Hashable,
) -> list[Op]:
    """The smallest stretch found by safe deletions that still fails at ``culprit`` (which
    completed at ``end``).

    The ops sent after ``end`` go first, unchecked (they cannot change the search up to
    ``end``: an indeterminate write they fed is only an option less, and a deadline they
    set lies after ``end``). Then the shortest suffix before the culprit that keeps the
    failure, found by doubling then bisection (so the stretch keeps the latest writes
    that explain the failure, and each trial is small). Then chunks, halving, oldest
    first (again keeping the latest), down to one op at a time until no safe deletion
    keeps it."""

    def fails(ops: Sequence[Op]) -> bool:
        failure = _first_failure(ops, model, initial, state)
        return failure is not None and failure.op is culprit

    def without(drop: set[int]) -> list[Op]:
        return [op for op in current if id(op) not in drop]

    current = sorted(ops, key=lambda op: (op.send, op.index))
    current = without(_safe_part((op for op in current if op.send > end), current))
    older = [op for op in current if op is not culprit]

    def keeping(count: int) -> list[Op]:
        return without(_safe_part(older[: len(older) - count], current))

    keep = 8
    while keep < len(older) and not fails(keeping(keep)):
        keep *= 2
    lo, hi = keep // 2 + 1 if keep > 8 else 0, min(keep, len(older))
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(keeping(mid)):
            hi = mid
        else:
            lo = mid + 1
    current = keeping(hi)
    size = max(1, (len(current) - 1) // 2)
    while True:
        removed = False
        candidates = [op for op in current if op is not culprit]
        for i in range(0, len(candidates), size):
            present = {id(op) for op in current}
            chunk = (op for op in candidates[i : i + size] if id(op) in present)
            drop = _safe_part(chunk, current)
            if drop and fails(trial := without(drop)):
                current, removed = trial, True
        if size == 1 and not removed:
            return current
        size = max(1, size // 2)


def _could_see(
    ops: Sequence[Op],
    culprit: Op,
    end: float,
    model: Model,
    initial: str | None,
    state: Hashable,
) -> tuple[str | None, ...]:
    """The values the culprit could have seen (or compared against) in a linearization of
    ``ops`` up to its completion, each tried by replacing what it saw. Tried: the values
    of writes not surely overwritten before it began (another write was sent after they
    completed and completed before it began), and the initial value until one was."""
    overwritten_before = max(
        (op.send for op in ops if _produces(op)[0] and _done(op) < culprit.send), default=-INF
    )
    candidates: list[str | None] = []
    if overwritten_before == -INF and isinstance(state, tuple) and len(state) == 1:
        candidates.append(state[0])
    for op in sorted(ops, key=lambda op: (op.send, op.index)):
        produces, value = _produces(op)
        if not produces or op is culprit or value in candidates or op.send >= end:
            continue
        if op.indeterminate or _done(op) >= overwritten_before:
            candidates.append(value)
    saw = _seen(culprit)
    out: list[str | None] = []
    others = [op for op in ops if op is not culprit]
    for value in candidates:
        if value == saw:
            continue
        if culprit.kind == OpKind.CAS and culprit.outcome is not Outcome.REJECTED:
            probe = replace(culprit, expected=value)
        else:
            probe = replace(culprit, result=value)
        failure = _first_failure([*others, probe], model, initial, state)
        if failure is None or (failure.op is not probe and failure.at >= end):
            out.append(value)
    return tuple(out)


def _explain(key: str, failure: _Failure, run: _KeyRun) -> Anomaly:
    model, initial, culprit = run.model, run.initial, failure.op
    if not run.exact:
        stretch = sorted(failure.ops, key=lambda op: (op.send, op.index))
        return Anomaly(key, AnomalyKind.NOT_LINEARIZABLE, culprit, (), tuple(stretch), failure.at)
    end = failure.at
    stretch = _minimize(failure.ops, culprit, end, model, initial, failure.state)
    # what it could have seen is judged from the last write that completed before it began
    ops = failure.ops
    since = max(
        (op.send for op in ops if _produces(op)[0] and _done(op) < culprit.send), default=-INF
    )
    drop = _safe_part((op for op in ops if op.send < since or op.send > end), ops)
    context = [op for op in ops if id(op) not in drop]
    could = _could_see(context, culprit, end, model, initial, failure.state)
    anomaly = Anomaly(key, AnomalyKind.NOT_LINEARIZABLE, culprit, could, tuple(stretch), end)
    return replace(anomaly, kind=_kind(anomaly, run))


def _kind(anomaly: Anomaly, run: _KeyRun) -> AnomalyKind:
    """Name the shape, from the key's whole history as known. Stale (a read, or a CAS) and
    lost write need the value seen to have been overwritten before the culprit began:
    another value was written or seen before it began (in the stretch), by a write sent
    after the seen value surely existed (its write completed, or another op saw it); so
    two concurrent writes seen in opposite orders are just not linearizable. Stale when
    that newer value was seen by some op, lost when an acknowledged write nobody saw."""
    c = anomaly.culprit
    saw = _seen(c)
    writers = [op for op in run.ops if op.kind in _WRITERS and op.value == saw]
    if saw != run.initial and not writers:
        return AnomalyKind.NEVER_WRITTEN
    if saw != run.initial and not any(op.send < c.send for op in writers):
        return AnomalyKind.NOT_LINEARIZABLE  # it saw a value from the future
    newer = _newer(anomaly)
    if newer is None:
        return AnomalyKind.NOT_LINEARIZABLE
    _, value, written = newer
    effective = (Outcome.OK, Outcome.TIMEOUT)
    written_by = -INF if saw == run.initial else INF  # when the seen value surely existed
    for op in run.ops:
        if op.kind in _WRITERS and op.value == saw and op.outcome in effective:
            written_by = min(written_by, _done(op))
        elif op is not c and not op.indeterminate and _observes(op) == (True, saw):
            written_by = min(written_by, _done(op))
    if not any(
        op.kind in _WRITERS
        and op.value == value
        and op.outcome in effective
        and op.send > written_by
        for op in run.ops
    ):
        return AnomalyKind.NOT_LINEARIZABLE
    if c.kind == OpKind.CAS and c.outcome is not Outcome.REJECTED:
        return AnomalyKind.STALE_CAS
    seen = {_observes(op)[1] for op in run.ops if _observes(op)[0] and not op.indeterminate}
    if not written or value in seen:
        return AnomalyKind.STALE_READ
    return AnomalyKind.LOST_WRITE


_WRITERS: Final = frozenset((OpKind.WRITE, OpKind.CAS))


# ---------------------------------------------------------------- entry points


def check(
    ops: Iterable[Op], model: Model | None = None, *, initial: str | None = None
) -> CheckResult:
    """Judge a whole history, key by key; ``initial`` is every key's value before the first
    op (None: absent). An op of a kind the model does not judge raises ValueError."""
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
        run = _KeyRun(judge, initial)
        for op in sorted(by_key[key], key=lambda op: (op.send, op.index)):
            run.add(op)
        found = run.advance(INF, first_only=True)
        if found:
            anomalies.append(_explain(key, found[0], run))
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
    found; the key's search then resumes from an unknown state, so later anomalies are
    found too."""

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
        self._keys: dict[str, _KeyRun] = {}
        self._found: list[tuple[float, Anomaly, SafetyViolation]] = []

    @property
    def anomalies(self) -> tuple[Anomaly, ...]:
        """Every anomaly found so far, in the order found."""
        return tuple(a for _, a, _ in self._found)

    def check(self, now: float) -> tuple[SafetyViolation, ...]:
        """Judge what is new up to the horizon; the anomalies found in the last
        ``show_for`` seconds, as violations."""
        horizon = self._history.pending_since()  # first: ops resolved after it are late
        if horizon is None:
            horizon = now
        ops = self._history.snapshot()
        for op in ops[self._seen :]:
            if op.kind not in self._model.kinds:
                raise ValueError(_unknown_kind(self._model, op))
            run = self._keys.get(op.key)
            if run is None:
                run = self._keys[op.key] = _KeyRun(self._model, self._initial, checkpoints=True)
            run.add(op)
        self._seen = len(ops)
        for key in sorted(self._keys):
            run = self._keys[key]
            for failure in run.advance(horizon):
                anomaly = _explain(key, failure, run)
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
