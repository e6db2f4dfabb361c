"""The history: every request the workload sent, and what came back.

A history is the evidence every checker verdict points to, as in Jepsen: what
clients observed, not what the subject says about itself. Each :class:`Op` is
one request, recorded once it has resolved (or been abandoned), with its
schedule, send and receive times on one clock.

Clock: times are epoch seconds (``time.time()`` scale) so a history lines up
with other timelines (the monitor's, the subject's logs), but they are taken
from ``time.monotonic()`` anchored to the wall clock once, when the
:class:`EpochClock` is made. A wall-clock step during a run (NTP, a test's
faketime) therefore does not bend the history.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


class Outcome(enum.StrEnum):
    """How a request resolved, in the engine's words; a subject maps its own onto these."""

    OK = "ok"  # the subject did what was asked (a rate limiter: allowed)
    REJECTED = "rejected"  # a deliberate, well-formed refusal (a rate limiter: blocked)
    ERROR = "error"  # an error reply or a transport failure: the request surely failed
    TIMEOUT = "timeout"  # no answer in time: indeterminate, the subject may have acted


class OpKind(enum.StrEnum):
    """What an op asked for. A subject may use kinds of its own (any string); a consistency
    model judges the kinds it knows (a register: read, write, compare-and-set)."""

    REQUEST = "request"  # an opaque request (a rate limiter's check): the default
    READ = "read"
    WRITE = "write"
    CAS = "cas"  # compare-and-set: write ``value`` if the register holds ``expected``


class EpochClock:
    """Monotonic time expressed in epoch seconds, anchored to ``time.time()`` once."""

    __slots__ = ("_mono0", "_wall0")

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        """The current time, epoch seconds."""
        return self._wall0 + (time.monotonic() - self._mono0)

    def to_epoch(self, monotonic: float) -> float:
        """A ``time.monotonic()`` reading in epoch seconds."""
        return self._wall0 + (monotonic - self._mono0)

    def drift(self) -> float:
        """Seconds the wall clock has moved against this clock since it was anchored
        (``time.time() - now()``): a subject that decides by its wall clock (a store's
        ``TIME``) and a history dated by this clock disagree by this much."""
        return time.time() - self.now()

    def to_monotonic(self, epoch: float) -> float:
        """An epoch time as a ``time.monotonic()`` reading (for scheduling sleeps)."""
        return self._mono0 + (epoch - self._wall0)


@dataclass(frozen=True, slots=True)
class Op:
    """One request: where it went, when, and what came back.

    ``scheduled`` is when the open-loop schedule wanted it sent, ``send`` when it
    actually left, ``recv`` when its answer (or error) arrived; ``recv`` is None
    for a timeout. ``gave_up`` is, for an op that never got an answer, how many
    seconds after ``send`` the client stopped waiting (its timeout, or the moment the
    workload stopped), when known. All times are epoch seconds.

    What it asked and what it saw: ``kind`` (an :class:`OpKind`, or a subject's own),
    ``value`` (the value written; a CAS's new value), ``expected`` (the value a CAS compared
    against) and ``result`` (the value a read returned, None when the key was absent; the
    current value a failed CAS reported, None when unknown). An op whose outcome is
    ``TIMEOUT`` is indeterminate (Jepsen's ``:info``): it may take effect at any time after
    ``send``, or never.
    """

    index: int
    target: str
    key: str
    scheduled: float
    send: float
    recv: float | None
    outcome: Outcome
    detail: str | None = None
    gave_up: float | None = None
    kind: str = OpKind.REQUEST
    value: str | None = None
    expected: str | None = None
    result: str | None = None

    @property
    def indeterminate(self) -> bool:
        """No answer came: the op may have taken effect, or not."""
        return self.outcome is Outcome.TIMEOUT

    @property
    def resolved(self) -> float | None:
        """When the client learnt the outcome: the answer's arrival, or for a timeout the
        moment it stopped waiting (``send + gave_up``); None when neither is known."""
        if self.recv is not None:
            return self.recv
        if self.gave_up is not None:
            return self.send + self.gave_up
        return None

    @property
    def latency(self) -> float | None:
        """Seconds from send to receive, or None when no answer came."""
        return None if self.recv is None else self.recv - self.send

    @property
    def lateness(self) -> float:
        """Seconds the send lagged its schedule (the generator's own delay)."""
        return self.send - self.scheduled

    def to_dict(self) -> dict[str, str | float | int | None]:
        """The op as JSON-ready values; the value fields only when set (a request's op
        reads as it always did)."""
        out: dict[str, str | float | int | None] = {
            "index": self.index,
            "target": self.target,
            "key": self.key,
            "scheduled": self.scheduled,
            "send": self.send,
            "recv": self.recv,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "gave_up": self.gave_up,
        }
        if self.kind != OpKind.REQUEST:
            out["kind"] = str(self.kind)
        for name in ("value", "expected", "result"):
            if (v := getattr(self, name)) is not None:
                out[name] = v
        return out

    @classmethod
    def from_dict(cls, raw: object) -> Op:
        """Parse one op as written by :meth:`to_dict`; a malformed entry raises ValueError."""
        if not isinstance(raw, dict):
            raise ValueError(f"an op must be a JSON object, got {raw!r}")
        try:
            recv = raw["recv"]
            detail = raw.get("detail")
            gave_up = raw.get("gave_up")
            value, expected, result = raw.get("value"), raw.get("expected"), raw.get("result")
            return cls(
                index=int(raw["index"]),
                target=str(raw["target"]),
                key=str(raw["key"]),
                scheduled=float(raw["scheduled"]),
                send=float(raw["send"]),
                recv=None if recv is None else float(recv),
                outcome=Outcome(raw["outcome"]),
                detail=None if detail is None else str(detail),
                gave_up=None if gave_up is None else float(gave_up),
                kind=_kind(str(raw.get("kind", OpKind.REQUEST))),
                value=None if value is None else str(value),
                expected=None if expected is None else str(expected),
                result=None if result is None else str(result),
            )
        except KeyError as exc:
            raise ValueError(f"malformed op {raw!r}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed op {raw!r}: {exc}") from exc


def _kind(text: str) -> str:
    """A known kind as its :class:`OpKind`; a subject's own kind as the string it is."""
    try:
        return OpKind(text)
    except ValueError:
        return text


class History:
    """An append-only record of ops, cheap to append from the event loop.

    Ops are kept in the order they resolved; ``Op.index`` is their order in the
    schedule. Reads made while a workload runs should go through
    :meth:`snapshot`, which copies the list at one instant.

    The workload also announces each op when it is sent (:meth:`invoked`), so a checker
    can tell how far the history is complete: every op sent before :meth:`pending_since`
    has resolved, and :meth:`in_flight` lists the others as indeterminate ops.
    """

    __slots__ = ("_in_flight", "_ops", "clock")

    def __init__(self, ops: Iterable[Op] = (), *, clock: EpochClock | None = None) -> None:
        self._ops: list[Op] = list(ops)
        self._in_flight: dict[int, Op] = {}
        self.clock = clock if clock is not None else EpochClock()

    def invoked(self, op: Op) -> None:
        """An op was sent and has not resolved yet (its ``index`` identifies it)."""
        self._in_flight[op.index] = op

    def append(self, op: Op) -> None:
        """An op resolved (or was abandoned): record it, and it is no longer in flight."""
        self._in_flight.pop(op.index, None)
        self._ops.append(op)

    def in_flight(self) -> tuple[Op, ...]:
        """Ops sent and not resolved yet, as the workload announced them (indeterminate)."""
        return tuple(self._in_flight.values())

    def pending_since(self) -> float | None:
        """The earliest send among ops still in flight (None: none is): every op sent
        before it has resolved and is in :meth:`snapshot`."""
        return min((op.send for op in self._in_flight.values()), default=None)

    def __len__(self) -> int:
        return len(self._ops)

    @property
    def ops(self) -> tuple[Op, ...]:
        """All ops so far (a copy, like :meth:`snapshot`)."""
        return tuple(self._ops)

    def snapshot(self) -> tuple[Op, ...]:
        """A consistent copy of the ops recorded so far, safe to read while appends go on."""
        return tuple(self._ops)

    def targets(self) -> tuple[str, ...]:
        """The targets that appear in the history, sorted."""
        return tuple(sorted({op.target for op in self._ops}))

    def select(
        self,
        *,
        target: str | None = None,
        outcomes: Outcome | Iterable[Outcome] | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> tuple[Op, ...]:
        """Ops to a target, with given outcomes, sent in ``[start, end)``; each filter optional."""
        return select(self.snapshot(), target=target, outcomes=outcomes, start=start, end=end)

    def to_json(self) -> str:
        return json.dumps({"ops": [op.to_dict() for op in self.snapshot()]})

    def write_json(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(self.to_json())
        return out

    @classmethod
    def from_json(cls, text: str) -> History:
        """Load a history written by :meth:`to_json`; malformed input raises ValueError."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("ops"), list):
            raise ValueError('a history must be a JSON object with an "ops" list')
        return cls(Op.from_dict(item) for item in raw["ops"])


def select(
    ops: Sequence[Op],
    *,
    target: str | None = None,
    outcomes: Outcome | Iterable[Outcome] | None = None,
    start: float | None = None,
    end: float | None = None,
) -> tuple[Op, ...]:
    """Filter ops by target, outcome and send time in ``[start, end)``."""
    wanted: frozenset[Outcome] | None
    if outcomes is None:
        wanted = None
    elif isinstance(outcomes, Outcome):
        wanted = frozenset((outcomes,))
    else:
        wanted = frozenset(outcomes)
    return tuple(
        op
        for op in ops
        if (target is None or op.target == target)
        and (wanted is None or op.outcome in wanted)
        and (start is None or op.send >= start)
        and (end is None or op.send < end)
    )
