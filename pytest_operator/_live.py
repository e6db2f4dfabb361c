"""The live view: a running scenario in the terminal, as it happens (Rich).

A :class:`LiveView` subscribes to an operator's events (``_events``): every monitor
tick's observation and active violations, violations confirmed and cleared, faults
injected and healed, diagnoses, audit entries, remediations and recoveries. It keeps
the little it shows (the last observation, each invariant's state, the faults, the
diagnoses, the actions) and reads the client history incrementally for requests per
second by outcome and latency. Listeners run on the event loop and only record under a
lock; drawing happens in Rich's refresh thread (about four times a second), so the
monitor pays for a few appends per tick and nothing more.

``pytest --operator-live`` shows it for each test that uses the operator (the plugin
binds it when the ``operator`` fixture is made and stops it when pytest reports the
test, leaving the last frame); ``operator demo`` shows it with a chapter banner.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pytest
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.segment import Segment
from rich.text import Text

from pytest_operator._events import (
    Audited,
    Diagnosed,
    Event,
    FaultHealed,
    FaultInjected,
    MonitorStarted,
    MonitorStopped,
    RecoveryMeasured,
    Remediated,
    Tick,
    ViolationCleared,
    ViolationConfirmed,
)
from pytest_operator._history import Outcome

if TYPE_CHECKING:
    from collections.abc import Callable

    from pytest_operator._actions import AuditEntry
    from pytest_operator._chaos import Injection
    from pytest_operator._diagnosis import Diagnosis
    from pytest_operator._history import History, Op
    from pytest_operator._invariants import Invariant, Violation
    from pytest_operator._operator import Operator
    from pytest_operator._remediation import Remediation
    from pytest_operator._signals import ComponentSignals, Observation
    from pytest_operator._topology import Topology

REFRESH_PER_SECOND = 4
SPARK_WIDTH = 30
"""Seconds of traffic the sparklines show, one character a second."""
WIDE = 110
"""From this width on, panels sit side by side."""

BARS = "▁▂▃▄▅▆▇█"
OUTCOME_STYLE = {
    Outcome.OK: "green",
    Outcome.REJECTED: "yellow",
    Outcome.ERROR: "red",
    Outcome.TIMEOUT: "magenta",
}


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH, top: float | None = None) -> str:
    """The last ``width`` values as bars scaled to ``top`` (default: their maximum);
    padded on the left with spaces when there are fewer."""
    shown = list(values)[-width:]
    high = top if top is not None else max(shown, default=0.0)
    bars = []
    for v in shown:
        if high <= 0 or v <= 0:
            bars.append(BARS[0] if v <= 0 and high > 0 else " ")
            continue
        idx = min(len(BARS) - 1, int(v / high * (len(BARS) - 1) + 0.5))
        bars.append(BARS[max(idx, 1)])
    return " " * (width - len(shown)) + "".join(bars)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


@dataclass(slots=True)
class Traffic:
    """Requests per second by outcome and latency percentiles, per whole second of
    ``op.send``, read incrementally from a history."""

    history: History | None = None
    seen: int = 0
    counts: dict[int, Counter[Outcome]] = field(default_factory=dict)
    latencies: dict[int, list[float]] = field(default_factory=dict)
    keep: int = 120

    def ingest(self) -> None:
        if self.history is None:
            return
        ops = self.history.snapshot()
        if len(ops) <= self.seen:
            return
        new: Sequence[Op] = ops[self.seen :]
        self.seen = len(ops)
        for op in new:
            second = int(op.send)
            self.counts.setdefault(second, Counter())[op.outcome] += 1
            if op.latency is not None:
                self.latencies.setdefault(second, []).append(op.latency * 1000)
        if len(self.counts) > self.keep:
            for old in sorted(self.counts)[: len(self.counts) - self.keep]:
                self.counts.pop(old, None)
                self.latencies.pop(old, None)

    def window(self, now: float, width: int = SPARK_WIDTH) -> list[int]:
        """The last ``width`` whole seconds before ``now`` (the current one is not over)."""
        last = int(now) - 1
        return list(range(last - width + 1, last + 1))

    def series(self, outcome: Outcome, seconds: Sequence[int]) -> list[float]:
        return [float(self.counts.get(s, Counter())[outcome]) for s in seconds]

    def latency_series(self, q: float, seconds: Sequence[int]) -> list[float]:
        return [_percentile(sorted(self.latencies.get(s, ())), q) for s in seconds]


@dataclass(slots=True)
class _State:
    """What the view shows, as the listeners record it (guarded by the view's lock)."""

    label: str = ""
    bound_at: float = 0.0
    topology: Topology | None = None
    invariants: tuple[Invariant, ...] = ()
    observation: Observation | None = None
    observed_at: float | None = None
    observe_error: str | None = None
    source: str = ""
    ticks: int = 0
    monitoring: str | None = None
    """What the monitor is doing ("until node_down", "for 15 s"), None between runs."""
    violations: dict[tuple[str, str], Violation] = field(default_factory=dict)
    injections: list[Injection] = field(default_factory=list)
    diagnoses: dict[str, tuple[float, Diagnosis]] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    remediations: list[Remediation] = field(default_factory=list)
    recoveries: list[RecoveryMeasured] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)


class LiveView:
    """A Rich live view of one operator's run at a time (see the module's docstring)."""

    def __init__(self, console: Console | None = None, *, title: str = "pytest-operator") -> None:
        self.console = console if console is not None else Console()
        self.title = title
        self._lock = threading.Lock()
        self._state = _State()
        self._chapter: tuple[str, str] = ("", "")
        self._unsubscribe: Callable[[], None] | None = None
        self._live: Live | None = None
        self.clock: Callable[[], float] = time.time

    # -- following a run --------------------------------------------------------------

    def bind(self, operator: Operator, *, label: str = "") -> None:
        """Follow this operator's run (its monitor's ticks and violations, its faults, its
        history, diagnoses, audit and recoveries); the previous one is let go. What
        already happened (faults injected, audit entries, runs) is shown too."""
        self.unbind()
        state = _State(
            label=label,
            bound_at=self.clock(),
            topology=operator.session.topology,
            invariants=tuple(operator.session.invariants),
            traffic=Traffic(history=operator.history),
        )
        state.injections = list(operator.injections.injections)
        state.audit = list(operator.actions.audit)
        state.remediations = list(operator.remediations)
        for run in operator.runs:
            for v in run.violations:
                state.violations[(v.invariant, v.component)] = v
            last = run.timeline.last_observation()
            if last is not None:
                state.observation, state.observed_at = last, last.at
        with self._lock:
            self._state = state
        self._unsubscribe = operator.subscribe(self.on_event)

    def unbind(self) -> None:
        """Stop following the current operator (its last state stays shown)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_event(self, event: Event) -> None:
        """Record one event (a listener: cheap, on the event loop)."""
        with self._lock:
            _record(self._state, event)

    def chapter(self, title: str, text: str = "") -> None:
        """A banner shown at the top (the demo's chapter and its key hint); "" clears it."""
        with self._lock:
            self._chapter = (title, text)

    # -- drawing ----------------------------------------------------------------------

    def render(self) -> RenderableType:
        """The current frame."""
        now = self.clock()
        with self._lock:
            state = self._state
            state.traffic.ingest()
            snap = _Snapshot.take(state, self._chapter, now)
        return _Frame(snap, self.title)

    def start(self) -> None:
        """Show the view on the console, redrawn about four times a second."""
        if self._live is not None:
            return
        live = Live(
            console=self.console,
            get_renderable=self.render,
            refresh_per_second=REFRESH_PER_SECOND,
            auto_refresh=True,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )
        live.start(refresh=True)
        self._live = live

    def stop(self) -> None:
        """Stop redrawing, the last frame left on screen (idempotent)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    @property
    def running(self) -> bool:
        return self._live is not None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop redrawing for a while (a question asked at the terminal), then resume."""
        was = self.running
        self.stop()
        try:
            yield
        finally:
            if was:
                self.start()


def _keep(state: _State, v: Violation) -> None:
    """Record ``v``; a violation still active from an earlier monitor run keeps its first
    sighting and confirmation (a new run confirms it again: it was not detected again)."""
    key = (v.invariant, v.component)
    old = state.violations.get(key)
    if old is not None and old.cleared_at is None and old.confirmed_at < v.confirmed_at:
        v = replace(v, first_seen=min(old.first_seen, v.first_seen), confirmed_at=old.confirmed_at)
    state.violations[key] = v


def _record(state: _State, event: Event) -> None:
    if isinstance(event, Tick):
        state.ticks += 1
        state.source = event.source
        if event.observation is not None:
            state.observation = event.observation
            state.observed_at = event.at
            state.observe_error = None
        else:
            state.observe_error = event.error
        for v in event.active:
            _keep(state, v)
    elif isinstance(event, ViolationConfirmed | ViolationCleared):
        _keep(state, event.violation)
    elif isinstance(event, MonitorStarted):
        state.monitoring = (
            f"until {event.until} (at most {event.timeout:g} s)"
            if event.until
            else f"for {event.timeout:g} s"
        )
    elif isinstance(event, MonitorStopped):
        state.monitoring = None
    elif isinstance(event, FaultInjected):
        if event.injection not in state.injections:
            state.injections.append(event.injection)
    elif isinstance(event, FaultHealed):
        pass  # the injection is live: its healed_at is read when drawing
    elif isinstance(event, Diagnosed):
        state.diagnoses[event.diagnosis.engine] = (event.at, event.diagnosis)
    elif isinstance(event, Audited):
        state.audit.append(event.entry)
    elif isinstance(event, Remediated):
        state.remediations.append(event.remediation)
    elif isinstance(event, RecoveryMeasured):
        state.recoveries.append(event)
        state.source = ""
        if event.recovery is not None:  # every invariant held from then on, sustained
            at = event.recovery.recovered_at
            for key, v in state.violations.items():
                if v.cleared_at is None:
                    state.violations[key] = replace(v, cleared_at=max(at, v.confirmed_at))


@dataclass(frozen=True, slots=True)
class _FaultRow:
    description: str
    injected_at: float
    healed_at: float | None
    left_in_place: bool
    heal_error: str | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A copy of the state taken under the lock; drawn outside it."""

    now: float
    label: str
    bound_at: float
    chapter: tuple[str, str]
    topology: Topology | None
    invariants: tuple[Invariant, ...]
    observation: Observation | None
    observed_at: float | None
    observe_error: str | None
    source: str
    ticks: int
    monitoring: str | None
    violations: tuple[Violation, ...]
    faults: tuple[_FaultRow, ...]
    diagnoses: tuple[tuple[float, Diagnosis], ...]
    audit: tuple[AuditEntry, ...]
    recoveries: tuple[RecoveryMeasured, ...]
    rates: tuple[tuple[Outcome, tuple[float, ...]], ...]
    p50: tuple[float, ...]
    p99: tuple[float, ...]

    @classmethod
    def take(cls, state: _State, chapter: tuple[str, str], now: float) -> _Snapshot:
        seconds = state.traffic.window(now)
        faults = tuple(
            _FaultRow(
                str(i.fault),
                i.injected_at,
                i.healed_at,
                i.left_in_place,
                None if i.heal_error is None else f"{type(i.heal_error).__name__}",
            )
            for i in state.injections
            if i.injected_at > 0
        )
        return cls(
            now=now,
            label=state.label,
            bound_at=state.bound_at,
            chapter=chapter,
            topology=state.topology,
            invariants=state.invariants,
            observation=state.observation,
            observed_at=state.observed_at,
            observe_error=state.observe_error,
            source=state.source,
            ticks=state.ticks,
            monitoring=state.monitoring,
            violations=tuple(state.violations.values()),
            faults=faults,
            diagnoses=tuple(state.diagnoses.values()),
            audit=tuple(state.audit),
            recoveries=tuple(state.recoveries),
            rates=tuple(
                (o, tuple(state.traffic.series(o, seconds)))
                for o in (Outcome.OK, Outcome.REJECTED, Outcome.ERROR, Outcome.TIMEOUT)
            ),
            p50=tuple(state.traffic.latency_series(0.5, seconds)),
            p99=tuple(state.traffic.latency_series(0.99, seconds)),
        )

    def first_fault_before(self, at: float) -> float | None:
        times = [f.injected_at for f in self.faults if f.injected_at <= at]
        return min(times) if times else None


class _Frame:
    """One frame: panels side by side when the console is wide, stacked otherwise."""

    def __init__(self, snap: _Snapshot, title: str) -> None:
        self.snap = snap
        self.title = title

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.snap
        parts: list[RenderableType] = [_header(s, self.title)]
        pairs = [
            (_topology(s), _invariants(s)),
            (_faults(s), _traffic(s)),
            (_diagnosis(s), _actions(s)),
        ]
        width = options.max_width
        if width < WIDE:
            for left, right in pairs:
                parts += [left, right]
            yield Group(*parts)
            return
        yield Group(*parts)
        # side by side, each half drawn at its own width and the lines zipped (cheaper
        # than a table measuring both: this is drawn four times a second)
        half = (width - 1) // 2
        for left, right in pairs:
            lines_l = console.render_lines(left, options.update(width=half), pad=True)
            lines_r = console.render_lines(right, options.update(width=width - half - 1), pad=True)
            blank_l = [Segment(" " * half)]
            blank_r = [Segment(" " * (width - half - 1))]
            for i in range(max(len(lines_l), len(lines_r))):
                yield from lines_l[i] if i < len(lines_l) else blank_l
                yield Segment(" ")
                yield from lines_r[i] if i < len(lines_r) else blank_r
                yield Segment.line()


def _ago(now: float, at: float | None) -> str:
    return "-" if at is None else f"{max(0.0, now - at):.1f} s ago"


def _header(s: _Snapshot, title: str) -> RenderableType:
    line = Text()
    line.append(title, style="bold")
    if s.label:
        line.append(f"  {s.label}", style="cyan")
    line.append(f"  {s.now - s.bound_at:5.1f} s" if s.bound_at else "")
    status = f"monitoring {s.monitoring}" if s.monitoring else "monitor idle"
    if s.source == "recovery" and not s.monitoring:
        status = "watching the recovery"
    status_line = Text(status, style="dim")
    status_line.append(f"  ticks {s.ticks}, last observation {_ago(s.now, s.observed_at)}")
    body: list[RenderableType] = [line, status_line]
    title_text, hint = s.chapter
    if title_text:
        banner = Text(title_text, style="bold white on blue")
        if hint:
            banner.append(f"  {hint}", style="white on blue")
        body.insert(0, banner)
    if s.observe_error:
        body.append(Text(f"observe() failed: {s.observe_error}", style="red"))
    return Group(*body)


def _component_state(c: ComponentSignals | None) -> Text:
    if c is None:
        return Text("-", style="dim")  # not observed (yet, or ever: a client)
    if not c.reachable:
        why = f" ({c.probe_failure})" if c.probe_failure else ""
        return Text(f"DOWN{why}", style="bold red")
    if c.ready is False:
        return Text("not ready", style="yellow")
    text = Text("degraded" if c.degraded else "up", style="yellow" if c.degraded else "green")
    if c.role is not None:
        text.append(f" {c.role}", style="bold" if str(c.role) == "leader" else "")
    if c.term is not None:
        text.append(f" t{c.term}", style="dim")
    if c.quorum is False:
        text.append(" no quorum", style="red")
    return text


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


Cell = str | Text
_LEFT: frozenset[int] = frozenset()


def _grid(
    rows: Sequence[Sequence[Cell]], *, header: Sequence[str] = (), right: frozenset[int] = _LEFT
) -> Text:
    """Rows of cells as one Text, each column padded to its widest cell (``right``: the
    columns aligned right), two spaces apart, lines cropped at the panel's edge. Cheaper
    to draw than a Table, which measures every cell on every frame."""
    texts = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    if header:
        texts.insert(0, [Text(h, style="bold") for h in header])
    widths = [max((len(r[i]) for r in texts if i < len(r)), default=0) for i in range(_cols(texts))]
    out = Text(no_wrap=True, overflow="ellipsis")
    for n, row in enumerate(texts):
        if n:
            out.append("\n")
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - len(cell))
            last = i == len(row) - 1
            if i in right:
                out.append(pad)
            out.append_text(cell)
            if i not in right and not last:
                out.append(pad)
            if not last:
                out.append("  ")
    return out


def _cols(rows: Sequence[Sequence[Text]]) -> int:
    return max((len(r) for r in rows), default=0)


def _topology(s: _Snapshot) -> RenderableType:
    obs = s.observation
    rows: list[list[Cell]] = []
    links: list[list[Cell]] = []
    if s.topology is not None:
        for comp in s.topology.components:
            sig = obs.component(comp.name) if obs is not None else None
            rows.append(
                [
                    comp.name,
                    Text(str(comp.kind), style="dim"),
                    _component_state(sig),
                    _num(sig.latency_p99_ms if sig else None, ".0f"),
                    "-" if sig is None or sig.error_rate is None else f"{sig.error_rate:.0%}",
                ]
            )
        by_source: dict[str, Text] = {}  # one row a source: a mesh of n peers is n rows
        for lk in s.topology.links:
            sig_l = obs.link(lk.source, lk.target) if obs is not None else None
            cell = by_source.setdefault(lk.source, Text())
            if cell:
                cell.append("  ")
            cell.append(lk.target)
            up = None if sig_l is None else sig_l.up
            if up is not None:
                cell.append(" up" if up else " DOWN", style="green" if up else "bold red")
            if sig_l is not None and sig_l.latency_p99_ms is not None:
                cell.append(f" {sig_l.latency_p99_ms:.0f}ms", style="dim")
            elif up is None:
                cell.append(" -", style="dim")  # nothing known of it
        links = [[source, cell] for source, cell in by_source.items()]
    components = _grid(
        rows, header=("component", "kind", "state", "p99 ms", "err"), right=frozenset({3, 4})
    )
    link_rows = _grid(links, header=("links from", "to (as the source sees them)"))
    link_rows.no_wrap, link_rows.overflow = False, "fold"  # a mesh's rows may wrap
    return Panel(Group(components, link_rows), title="topology", title_align="left")


def _invariants(s: _Snapshot) -> RenderableType:
    rows: list[list[Cell]] = []
    names = [i.name for i in s.invariants]
    names += sorted({v.invariant for v in s.violations} - set(names))
    for name in names:
        mine = [v for v in s.violations if v.invariant == name]
        active = [v for v in mine if v.cleared_at is None]
        if active:
            where = ", ".join(sorted({v.component for v in active}))
            state = Text(f"VIOLATED at {where}", style="bold red")
        elif mine:
            state = Text("cleared", style="yellow")
        else:
            state = Text("holds", style="green")
        detected = "-"
        if mine:
            first = min(mine, key=lambda v: v.confirmed_at)
            fault_at = s.first_fault_before(first.confirmed_at)
            detected = (
                f"{first.confirmed_at - fault_at:.2f} s after the fault"
                if fault_at is not None
                else time.strftime("at %H:%M:%S", time.localtime(first.confirmed_at))
            )
        rows.append([name, state, detected])
    table = _grid(rows, header=("invariant", "state", "detected"), right=frozenset({2}))
    messages = [Text(v.describe(), style="red") for v in s.violations if v.cleared_at is None]
    return Panel(Group(table, *messages[:4]), title="invariants", title_align="left")


def _faults(s: _Snapshot) -> RenderableType:
    if not s.faults:
        return Panel(Text("none injected", style="dim"), title="faults", title_align="left")
    rows: list[list[Cell]] = []
    for f in s.faults:
        if f.healed_at is None:
            state = Text(f"ACTIVE {s.now - f.injected_at:.1f} s", style="bold red")
            if f.left_in_place:
                state.append(" (left for the operator)", style="red")
        else:
            state = Text(f"healed after {f.healed_at - f.injected_at:.1f} s", style="green")
            if f.heal_error:
                state.append(f" (heal failed: {f.heal_error})", style="red")
        rows.append([f.description, state])
    return Panel(_grid(rows), title="faults", title_align="left")


def _traffic(s: _Snapshot) -> RenderableType:
    rows: list[list[Cell]] = []
    top = max((max(v, default=0.0) for _, v in s.rates), default=0.0)
    for outcome, values in s.rates:
        style = OUTCOME_STYLE[outcome]
        rows.append(
            [
                Text(f"{outcome} /s", style=style),
                f"{values[-1]:.0f}" if values else "-",
                Text(sparkline(values, top=top), style=style),
            ]
        )
    for name, values in (("p50 ms", s.p50), ("p99 ms", s.p99)):
        rows.append([name, f"{values[-1]:.1f}" if values else "-", sparkline(values)])
    return Panel(
        _grid(rows, right=frozenset({1})), title="requests (last 30 s)", title_align="left"
    )


def _diagnosis(s: _Snapshot) -> RenderableType:
    if not s.diagnoses:
        return Panel(Text("none yet", style="dim"), title="diagnosis", title_align="left")
    body: list[RenderableType] = []
    for _, d in s.diagnoses:
        head = Text(f"{d.engine}", style="bold")
        head.append(f" ({d.latency_s * 1000:.0f} ms)", style="dim")
        body.append(head)
        if not d.hypotheses:
            body.append(Text("  no fault", style="green"))
        for i, h in enumerate(d.hypotheses[:3], 1):
            line = Text(f" {i}. ")
            line.append(str(h.cause), style="bold red" if i == 1 else "")
            line.append(f"  {h.confidence:.0%}")
            body.append(line)
            if i == 1:
                for e in h.evidence_for[:3]:
                    body.append(Text(f"    + {e.text}", style="dim"))
                for e in h.evidence_against[:1]:
                    body.append(Text(f"    - {e.text}", style="dim"))
        for r in d.recommendations[:2]:
            args = ", ".join(f"{k}={v}" for k, v in r.args)
            body.append(Text(f"  → {r.action}({args})", style="cyan"))
    return Panel(Group(*body), title="diagnosis", title_align="left")


OUTCOME_STYLES = {"ok": "green", "dry-run": "cyan", "refused": "yellow", "failed": "red"}


def _actions(s: _Snapshot) -> RenderableType:
    if not s.audit and not s.recoveries:
        return Panel(Text("none taken", style="dim"), title="actions", title_align="left")
    body: list[RenderableType] = []
    for e in s.audit[-5:]:
        args = " ".join(f"{k}={v}" for k, v in e.args)
        line = Text(time.strftime("%H:%M:%S ", time.localtime(e.at)), style="dim")
        line.append(f"{e.action} {args}".strip())
        line.append(f"  {e.outcome.upper()}", style=OUTCOME_STYLES.get(e.outcome, "magenta"))
        if e.attempts:
            line.append(f" ({e.attempts} attempt{'s' if e.attempts != 1 else ''})", style="dim")
        body.append(line)
        why = f"{e.decision}" + (f" by {e.approved_by}" if e.approved_by else "")
        if e.risk:
            why += f", risk {e.risk}"
        if e.outcome != "ok" and e.detail:
            why += f": {e.detail}"
        body.append(Text(f"    {why}", style="dim"))
    for r in s.recoveries:
        if r.recovery is not None:
            body.append(
                Text(
                    f"recovered {r.recovery.time_to_recover:.2f} s after the first action"
                    f" (healthy for {r.recovery.sustained:g} s)",
                    style="bold green",
                )
            )
        else:
            body.append(Text(f"NOT recovered: {r.error}", style="bold red"))
    return Panel(Group(*body), title="actions (audit)", title_align="left")


def terminal_fd(stream: object) -> int | None:
    """The file descriptor of ``stream`` if it is a terminal, else None (a pipe, a file,
    a stream without one: the live view stays off and the output plain)."""
    import os

    fileno = getattr(stream, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
        return fd if isinstance(fd, int) and os.isatty(fd) else None
    except (OSError, ValueError):  # closed, or a stand-in without a descriptor
        return None


class LiveReporting:
    """``--operator-live`` in a pytest run: each test's operator shown while it runs.

    The view writes to its own duplicate of the terminal's descriptor, taken when the
    run starts, so pytest's output capture (which redirects descriptors 1 and 2 during
    each test) does not swallow it. It starts when a test's ``operator`` fixture is made
    and stops when pytest is about to report the test (after its body: faults the
    teardown heals show as still active), leaving the last frame above pytest's own
    progress output, which never writes while the view draws.
    """

    def __init__(self, fd: int) -> None:
        import os

        self._fd = os.dup(fd)
        self._stream = os.fdopen(self._fd, "w", encoding="utf-8", errors="replace")
        self.console = Console(file=self._stream, force_terminal=True)
        self.view = LiveView(self.console)

    def follow(self, operator: Operator, label: str) -> None:
        import os

        self.view.stop()
        with contextlib.suppress(OSError):
            width, height = os.get_terminal_size(self._fd)
            self.console.size = (width, height)
        self.view.bind(operator, label=label)
        self.console.line()
        self.view.start()

    def end(self) -> None:
        self.view.stop()
        self.view.unbind()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The view stops before pytest reports the test (its ``.`` or ``F``, or a failed
        setup's ``E``): the last frame stays, pytest's line goes under it. A passing
        setup is reported silently, so the view goes on into the test's body."""
        if report.when == "setup" and report.passed:
            return
        self.end()

    def pytest_runtest_logfinish(self) -> None:
        self.end()

    def pytest_keyboard_interrupt(self) -> None:
        """Ctrl-C: stop drawing (the last frame stays) before pytest reports the
        interruption; the fixtures' teardown then heals faults and stops the cluster."""
        self.end()

    def close(self) -> None:
        try:
            self.end()
        finally:
            self._stream.close()
