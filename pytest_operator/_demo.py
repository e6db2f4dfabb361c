"""``operator demo``: one fault, found, explained and fixed, chapter by chapter.

The demo starts the subject's embedded cluster and builds the run with the code the
pytest fixtures use (:func:`pytest_operator._run.open_run`): the same engine, faults and
subject, no demo-only path. Then it walks six chapters, each waiting for a key press
(Enter or space; ``--auto`` goes on by itself after a short pause; ``q`` quits):

1. healthy traffic: the workload's requests and a few seconds of the monitor;
2. a fault: a component the subject's catalogue can restart (an action whose
   ``remedies`` hold a crash and whose ``target`` accepts it; not the leader when the
   members agree on one) is killed and left down for the operator;
3. detection: the monitor's first violation at that component, and how long it took;
4. diagnosis: the engine's ranked causes, against the cause actually injected;
5. remediation: the engine's recommendations run through the action runner, the
   person's key press being the approval (``--auto`` approves);
6. recovery: every invariant holding again for a sustained stretch, and the time to
   recover.

The screen is the :class:`~pytest_operator._live.LiveView` with the chapter as its
banner (a plain rendering, chapter by chapter, when the output is not a terminal).
Ctrl-C (or SIGTERM, SIGHUP) anywhere, and ``q``, end the demo the way a scenario ends:
the workload stops, the fault is healed, every process of the cluster is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import io
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from rich.console import Console, RenderableType
from rich.text import Text

from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._keys import Keys

if TYPE_CHECKING:
    from pytest_operator._actions import Action, Args
    from pytest_operator._diagnosis import Diagnosis, DiagnosisEngine
    from pytest_operator._invariants import Violation
    from pytest_operator._monitor import MonitorRun
    from pytest_operator._operator import Operator
    from pytest_operator._options import OperatorOptions
    from pytest_operator._remediation import Recovery, Remediation
    from pytest_operator._run import Run
    from pytest_operator._signals import Observation
    from pytest_operator._subject import Subject, SubjectSession

CHAPTERS = 6
RATE = 50.0
"""Requests per second of the demo's workload (steady, open loop)."""
KEYS = ("k1", "k2", "k3")
HEALTHY_S = 3.0
"""Seconds the monitor watches the healthy cluster in chapter 1."""
PROBE_TIMEOUT_S = 10.0
"""Seconds to wait for an invariant to flag the killed component."""
DETECT_TIMEOUT_S = 20.0
SETTLE_S = 2.0
"""Seconds the monitor keeps observing after detection (evidence for the diagnosis)."""
RECOVER_WITHIN_S = 30.0
SUSTAIN_S = 2.0
AUTO_PAUSE_S = 1.5
WATCH_CHUNK_S = 5.0
"""Seconds of each monitor run that keeps the screen live while the demo waits."""
CONTINUE = "Enter/space: next · q: quit"
APPROVE = "Enter/y: approve · n: reject · q: quit"
EXIT_INTERRUPTED = 130


# --- the view --------------------------------------------------------------------------


class View(Protocol):
    """What the demo shows: the live view, or a plain one."""

    def bind(self, operator: Operator) -> None: ...
    def chapter(self, title: str, text: str = "") -> None: ...
    def render(self) -> RenderableType: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class PlainView:
    """Each chapter printed once, as lines of text (output that is not a terminal)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._banner: tuple[str, str] = ("", "")

    def bind(self, operator: Operator) -> None:
        pass

    def chapter(self, title: str, text: str = "") -> None:
        if (title, text) == self._banner:
            return
        self._banner = (title, text)
        if title or text:
            self.console.print(self.render())

    def render(self) -> RenderableType:
        title, text = self._banner
        return Text(f"== {title} ==\n{text}" if text else f"== {title} ==")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def export_svg(view: View, path: Path, *, title: str, width: int = 160) -> None:
    """The view's current frame as an SVG (Rich's export), written to ``path``."""
    console = Console(
        record=True, width=width, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(view.render())
    path.parent.mkdir(parents=True, exist_ok=True)
    console.save_svg(str(path), title=title)


# --- what the demo chooses, generically ------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrashTarget:
    """The component the demo kills, and the catalogue action that can restart it."""

    component: str
    action: str


def crash_targets(actions: Sequence[Action], components: Sequence[str]) -> list[CrashTarget]:
    """Every component an action of the catalogue can restart after a crash: its
    ``remedies`` hold :attr:`FaultKind.CRASH` and its ``target`` parameter accepts the
    component (a parameter without choices accepts any of ``components``)."""
    out: list[CrashTarget] = []
    for action in actions:
        if FaultKind.CRASH not in action.remedies or action.target is None:
            continue
        param = next(p for p in action.params if p.name == action.target)
        for name in param.choices or components:
            if all(t.component != name for t in out):
                out.append(CrashTarget(name, action.name))
    return out


def choose_crash_target(
    session: SubjectSession, observation: Observation, mesh: Sequence[str]
) -> CrashTarget:
    """The first component the catalogue can restart, the leader last: killing the member
    the others agree leads starts an election too, and the demo shows one fault at a
    time. A ValueError when the catalogue restarts nothing."""
    from pytest_operator._selectors import Roles

    names = [c.name for c in session.topology.components]
    candidates = crash_targets(session.actions, [*session.targets, *names])
    if not candidates:
        raise ValueError(
            "the subject's catalogue has no action that remedies a crash of a component"
            " (an Action whose remedies hold FaultKind.CRASH, with a target parameter),"
            " so the demo has nothing the operator could fix"
        )
    leader = Roles.of(observation, mesh).leader
    return sorted(candidates, key=lambda t: t.component == leader)[0]


async def flagging_invariant(
    session: SubjectSession, component: str, *, timeout: float
) -> str | None:
    """The first of the subject's invariants whose check finds ``component`` at fault in
    an observation (polled until one does, or ``timeout`` s): what the monitor waits for."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):  # an observation failing is one more try
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                obs = await session.observe()
            for inv in session.invariants:
                if any(f.component == component for f in inv.check(obs)):
                    return inv.name
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)


def _args(args: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in args)


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


class Outcome(enum.Enum):
    """How the demo ended."""

    CLOSED = "the loop closed: detected, diagnosed, remedied, recovered"
    REJECTED = "the person rejected the remediation"
    OPEN = "the loop did not close"


# --- the demo --------------------------------------------------------------------------


ApprovedStep = tuple[str, tuple[tuple[str, str], ...]]
"""An action's name and its arguments, as text."""


class KeyApprover:
    """The runner's approver in the demo: it lets run exactly the steps the person
    approved at the remediation chapter (a key press; ``--auto`` approves), and nothing
    else. Asking before the workflow starts keeps the person's thinking time out of the
    time to recover, which counts from the first action's start."""

    def __init__(self, auto: bool) -> None:
        self.name = "demo --auto" if auto else "demo (key press)"
        self.approved: set[ApprovedStep] = set()

    @staticmethod
    def step(
        action: str, args: Iterable[tuple[str, object]]
    ) -> tuple[str, tuple[tuple[str, str], ...]]:
        return action, tuple(sorted((k, str(v)) for k, v in args))

    async def __call__(self, action: Action, args: Args) -> bool:
        return self.step(action.name, args.items()) in self.approved


class Demo:
    """Six chapters over one run of ``subject``; :meth:`run` returns how it ended."""

    def __init__(
        self,
        subject: Subject,
        options: OperatorOptions,
        engines: Sequence[DiagnosisEngine],
        view: View,
        keys: Keys,
        *,
        auto: bool = False,
        pause: float = AUTO_PAUSE_S,
        svg: Path | None = None,
        svg_chapter: int = 5,
    ) -> None:
        self.subject = subject
        self.options = options
        self.engines = engines
        self.view = view
        self.keys = keys
        self.auto = auto
        self.pause = pause
        self.svg = svg
        self.svg_chapter = svg_chapter
        self.run_dir: Path | None = None
        self.operator: Operator | None = None
        self.approver = KeyApprover(auto)
        self._chapter = 0
        self._problems: list[str] = []

    # --- chapters and keys -----------------------------------------------------------

    def show(self, title: str, text: str) -> None:
        self.view.chapter(title, text)

    def _title(self, number: int, name: str) -> str:
        self._chapter = number
        return f"Chapter {number}/{CHAPTERS} · {name}"

    @contextlib.asynccontextmanager
    async def _watching(self, watch: bool) -> AsyncIterator[None]:
        """The monitor keeps observing while the demo waits (the screen stays live)."""
        op = self.operator
        if not watch or op is None:
            yield
            return

        async def observe() -> None:
            while True:
                await op.monitor(timeout=WATCH_CHUNK_S)

        task = asyncio.create_task(observe(), name="operator-demo-watch")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _wait_key(self, accept: str, *, watch: bool = True) -> str | None:
        """The first of the ``accept`` keys pressed from now on; None when --auto's pause
        passed first or the input ended (keys pressed while the demo was busy answer
        nothing; q quits at any time, through :class:`Keys`)."""
        async with self._watching(watch):
            self.keys.drain()
            while True:
                auto = self.auto or self.keys.ended
                key = await self.keys.next(self.pause if auto else None)
                if not key:
                    return None
                if key in accept:
                    return key

    def _export(self, number: int) -> None:
        if self.svg is not None and number == self.svg_chapter:
            export_svg(self.view, self.svg, title=f"operator demo --subject {self.subject.name}")

    async def chapter(self, number: int, name: str, text: str, *, watch: bool = True) -> None:
        """Show chapter ``number`` and wait for Enter/space (or --auto's pause), the
        monitor observing meanwhile unless the chapter runs its own (``watch``)."""
        title = self._title(number, name)
        hint = f"--auto: next in {self.pause:g} s · q: quit" if self.auto else CONTINUE
        self.show(title, f"{text}\n[{hint}]")
        self._export(number)
        await self._wait_key("\r\n ", watch=watch)

    async def approve(self, op: Operator, diagnosis: Diagnosis) -> bool:
        """Chapter 5's question: the diagnosis's recommended steps, approved (all of them)
        or rejected by a key press; ``--auto`` approves after its pause."""
        steps = []
        for rec in diagnosis.recommendations:
            action = op.actions.catalogue.get(rec.action)
            risk = f"risk {action.risk}" if action is not None else "not in the catalogue"
            steps.append(f"{rec.action}({_args(rec.args)}), {risk}")
        ask = f"The operator asks to run {'; then '.join(steps)}."
        title = self._title(5, "Remediation")
        if self.auto:
            self.show(title, f"{ask}\n[--auto approves in {self.pause:g} s · q: quit]")
            self._export(5)
            await self._wait_key("", watch=False)
            return True
        self.show(title, f"{ask} Approve?\n[{APPROVE}]")
        self._export(5)
        key = await self._wait_key("\r\n yYnN", watch=False)
        return key is None or key not in "nN"

    # --- the run ---------------------------------------------------------------------

    async def run(self) -> Outcome:
        from pytest_operator._run import open_run

        name = self.subject.name
        self.show(
            f"operator demo · {name}",
            f"Starting the {name} cluster (embedded: real processes on this machine)…",
        )
        async with open_run(self.subject, self.options, self.engines) as run:
            self.run_dir = run.cluster.run_dir.path
            run.operator.actions.audit_to(self.run_dir / "audit.jsonl")
            run.operator.actions.approver = self.approver
            self.operator = run.operator
            self.view.bind(run.operator)
            outcome = await self._chapters(run)
            self.show(
                "Stopping",
                "Stopping the workload, healing the fault, stopping every process…",
            )
        return outcome

    async def _chapters(self, run: Run) -> Outcome:
        from pytest_operator._workload import steady

        op = run.operator
        await run.workload.start(steady(rate=RATE), keys=list(KEYS))
        self.show(self._title(1, "Healthy traffic"), "The workload starts; the monitor watches…")
        healthy = await op.monitor(timeout=HEALTHY_S)
        await self.chapter(1, "Healthy traffic", self._healthy_text(run, healthy))

        self.show(self._title(2, "A fault"), "Choosing a component the operator could restart…")
        target = await self._inject(run)
        until = await flagging_invariant(run.session, target.component, timeout=PROBE_TIMEOUT_S)
        detect = asyncio.create_task(
            op.monitor(until=until, timeout=DETECT_TIMEOUT_S, settle=SETTLE_S)
        )
        try:
            await self.chapter(
                2,
                "A fault",
                f"kill({target.component}): its process group got SIGKILL and is left down"
                f" for the operator ({target.action} can restart it). The monitor watches.",
                watch=False,
            )
            self.show(self._title(3, "Detection"), "Waiting for the monitor…")
            monitored = await detect
        finally:
            if not detect.done():
                detect.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await detect
        # no monitor while the fault is in place and the person reads: a new run would
        # confirm the same violations again, later than the detection they just saw
        await self.chapter(
            3, "Detection", self._detection_text(monitored, target, until), watch=False
        )

        self.show(self._title(4, "Diagnosis"), "The engine ranks the causes…")
        diagnosis = (await op.diagnose(monitored))[0]
        await self.chapter(
            4, "Diagnosis", self._diagnosis_text(diagnosis, op.expected_cause()), watch=False
        )

        remediation = await self._remediate(op, monitored, diagnosis)
        return await self._recovery(op, remediation)

    async def _inject(self, run: Run) -> CrashTarget:
        from pytest_operator._chaos import kill

        obs = await run.session.observe()
        target = choose_crash_target(run.session, obs, run.cluster.mesh())
        await run.chaos.leave(kill(target.component))
        return target

    async def _remediate(self, op: Operator, run: MonitorRun, diagnosis: Diagnosis) -> Remediation:
        """The diagnosis's recommendations through the runner, each step let through by
        the approver only if the person approved it at this chapter (the demo's policy
        asks for every action)."""
        if not diagnosis.recommendations:
            self._problems.append("the diagnosis recommended no action")
            await self.chapter(
                5,
                "Remediation",
                "The diagnosis recommends no action from the catalogue.",
                watch=False,
            )
        elif await self.approve(op, diagnosis):
            self.approver.approved.update(
                KeyApprover.step(r.action, r.args) for r in diagnosis.recommendations
            )
        self.show(self._title(6, "Recovery"), "The operator acts…")
        return await op.remediate(run, diagnosis)

    async def _recovery(self, op: Operator, remediation: Remediation) -> Outcome:
        title = self._title(6, "Recovery")
        done = "; ".join(
            f"{s.action}({_args(s.args)}): {s.outcome} ({s.detail})" for s in remediation.steps
        )
        if not remediation.ok:
            rejected = any(
                s.outcome == "refused" and "not approved" in s.detail for s in remediation.steps
            )
            if rejected:
                text = f"Not remedied: {done}. The fault stays until the demo ends, which heals it."
                await self.chapter(6, "Recovery", text, watch=False)
                return Outcome.REJECTED
            self._problems.append(f"not remedied: {remediation.describe()}")
            await self.chapter(
                6, "Recovery", f"Not remedied: {done or 'nothing ran'}.", watch=False
            )
            return Outcome.OPEN
        self.show(title, f"{done}.\nWaiting for every invariant to hold for {SUSTAIN_S:g} s…")
        recovery: Recovery | None = None
        try:
            recovery = await op.assert_recovered(
                remediation, within=RECOVER_WITHIN_S, sustain=SUSTAIN_S
            )
        except AssertionError as exc:
            self._problems.append(str(exc))
        if recovery is None:
            text = f"{done}.\nNOT recovered: {self._problems[-1]}"
        else:
            text = (
                f"{done}.\nRecovered {recovery.time_to_recover:.2f} s after the first action:"
                f" every invariant held and every component answered for {SUSTAIN_S:g} s."
            )
        await self.chapter(6, "Recovery", text)
        return Outcome.CLOSED if recovery is not None and not self._problems else Outcome.OPEN

    # --- what each chapter says ------------------------------------------------------

    def _healthy_text(self, run: Run, monitored: MonitorRun) -> str:
        obs = monitored.timeline.last_observation()
        answering = sum(1 for c in obs.components if c.reachable) if obs is not None else 0
        total = len(obs.components) if obs is not None else 0
        seen = sorted({f"{v.invariant}@{v.component}" for v in monitored.violations})
        state = (
            f"{answering} of {total} components answer, no invariant broken"
            if not seen
            else f"{answering} of {total} components answer; seen: {', '.join(seen)}"
        )
        return (
            f"{RATE:g} requests/s over {', '.join(run.session.targets)};"
            f" {len(monitored.timeline.observations)} observations in {HEALTHY_S:g} s: {state}."
        )

    def _detection_text(self, monitored: MonitorRun, target: CrashTarget, until: str | None) -> str:
        first: Violation | None = None
        if until is not None:
            first = monitored.first(until, target.component)
        first = first or monitored.first_detection()
        if first is None:
            self._problems.append("not detected")
            return f"Nothing detected in {DETECT_TIMEOUT_S:g} s."
        others = sorted(
            {f"{v.invariant}@{v.component}" for v in monitored.violations if v is not first}
        )
        also = f"; also {', '.join(others)}" if others else ""
        return (
            f"Detected: {first.invariant} at {first.component}, confirmed"
            f" {monitored.delay(first):.2f} s after the fault ({first.message}){also}."
        )

    def _diagnosis_text(self, diagnosis: Diagnosis, expected: RootCause) -> str:
        top = diagnosis.top
        if top is None:
            self._problems.append("no cause diagnosed")
            return f"{diagnosis.engine}: no fault. The injected cause was {expected}."
        rank = diagnosis.rank_of(expected)
        verdict = (
            "the injected cause"
            if rank == 1
            else f"the injected {expected} ranked {_ordinal(rank)}"
            if rank is not None
            else f"the injected {expected} not ranked"
        )
        if rank != 1:
            self._problems.append(f"misdiagnosed: {verdict}")
        lines = [
            f"{diagnosis.engine}: {top.cause}, confidence {top.confidence:.0%}: {verdict}"
            f" (top 3: {diagnosis.top_causes(3)})."
        ]
        lines += [f"  for: {e.text}" for e in top.evidence_for[:2]]
        recs = "; ".join(f"{r.action}({_args(r.args)})" for r in diagnosis.recommendations)
        lines.append(f"Recommends: {recs or 'nothing'}.")
        return "\n".join(lines)


# --- the command -----------------------------------------------------------------------


def _make_view(console: Console, *, plain: bool, title: str) -> View:
    if plain or not console.is_terminal:
        return PlainView(console)
    from pytest_operator._live import LiveView

    view: View = LiveView(console, title=title)
    return view


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, on_signal: Callable[[], None]) -> Iterator[None]:
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in sigs:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


async def run_demo(
    subject: Subject,
    options: OperatorOptions,
    engines: Sequence[DiagnosisEngine],
    *,
    auto: bool,
    pause: float = AUTO_PAUSE_S,
    plain: bool = False,
    svg: Path | None = None,
    svg_chapter: int = 5,
    stdin: TextIO | None = None,
    console: Console | None = None,
) -> int:
    """Run the demo; the exit status: 0 when it ran to its end (or the person quit), 1
    when the loop did not close, 130 when interrupted. Ctrl-C, SIGTERM and SIGHUP cancel
    the demo, whose way out heals the fault and stops the cluster (a second Ctrl-C is
    ignored while that runs)."""
    loop = asyncio.get_running_loop()
    console = console or Console()
    view = _make_view(console, plain=plain, title=f"operator demo · {subject.name}")
    stopping: list[str] = []
    task: asyncio.Task[Outcome] | None = None

    def stop(why: str) -> None:
        if stopping:
            return
        stopping.append(why)
        view.chapter(
            "Interrupted" if why == "signal" else "Quit",
            "Healing the fault and stopping every process of the cluster…",
        )
        if task is not None:
            task.cancel()

    with (
        _signals(loop, lambda: stop("signal")),
        Keys(stdin or sys.stdin, lambda: stop("q")) as keys,
    ):
        demo = Demo(
            subject,
            options,
            engines,
            view,
            keys,
            auto=auto,
            pause=pause,
            svg=svg,
            svg_chapter=svg_chapter,
        )
        view.start()
        try:
            task = asyncio.create_task(demo.run(), name="operator-demo")
            if stopping:  # a signal before the task was there
                task.cancel()
            try:
                outcome = await task
            except asyncio.CancelledError:
                if not stopping:
                    raise
                outcome = None
        finally:
            if stopping:
                how = "Interrupted" if stopping[0] == "signal" else "Quit"
                view.chapter(how, "The fault healed; every process of the cluster stopped.")
            elif task is not None and task.done() and not task.cancelled() and not task.exception():
                view.chapter("Done", "The fault healed; every process of the cluster stopped.")
            view.stop()
    where = f" (logs and audit trail in {demo.run_dir})" if demo.run_dir else ""
    if stopping:
        how = "interrupted" if stopping[0] == "signal" else "quit"
        console.print(f"operator demo: {how}; the fault healed and the cluster stopped{where}")
        return EXIT_INTERRUPTED if stopping[0] == "signal" else 0
    assert outcome is not None
    console.print(f"operator demo: {outcome.value}; the cluster stopped{where}")
    for problem in demo._problems:
        console.print(f"  - {problem}")
    return 1 if outcome is Outcome.OPEN else 0
