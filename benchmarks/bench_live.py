"""What the live view costs the monitor: time to detect and tick time, with and without it.

One embedded cluster of the subject (default ``ratelimiter``) runs for the whole
benchmark. Each trial resets it, waits until it is healthy, starts a steady workload,
monitors the healthy cluster for ``--steady`` seconds (its ticks count in the tick
time; a violation there is an error), kills a component (``--component``, default
``node-1``) and monitors until the ``--invariant`` (default ``node_down``) is confirmed;
the fault is healed after. Trials alternate between the two modes, ``--runs`` of each
(which goes first alternates too):

- ``without``: no view; the monitor's only listener is the tick probe (below);
- ``with``: a :class:`LiveView` is bound to the operator and started, drawing four times
  a second on a Rich console that writes terminal output (colours, cursor moves) to
  ``os.devnull``: the same rendering work as on a terminal, none of its scrolling.

Figures per mode: the median time to detect (confirmation minus injection) and the
median and 99th percentile tick time (over every tick of the mode's trials): from the
start of a tick's observation to the end of its listeners (the observation, the
invariants' evaluation, the events and the view's recording of them), measured by a
probe that is the last listener in both modes (so it is in both figures alike). Then the
ratios with/without, and (``per-run``) the median of each run's own ratio (its two
trials ran back to back, under the same load). The view draws in Rich's own thread;
what it costs the monitor shows as longer ticks (the GIL, the CPU) and later detection.
The frames the view drew are counted: a ``with`` trial in which it did not draw all
along is an error.

A run with errors is refused (exit 1, no figures): a trial in which the invariant was
not confirmed, an observation failed, a violation showed before the fault, the view's
listener raised or the view did not draw, or the cluster did not come back healthy.

    .venv/bin/python benchmarks/bench_live.py --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, RenderableType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_operator import _registry  # noqa: E402
from pytest_operator._causal import CausalEngine  # noqa: E402
from pytest_operator._chaos import Chaos, Observed, kill  # noqa: E402
from pytest_operator._embedded import EmbeddedCluster  # noqa: E402
from pytest_operator._events import Event, Tick  # noqa: E402
from pytest_operator._history import History  # noqa: E402
from pytest_operator._live import LiveView  # noqa: E402
from pytest_operator._monitor import wait_healthy  # noqa: E402
from pytest_operator._operator import InjectionLog, Operator  # noqa: E402
from pytest_operator._signals import Observation  # noqa: E402
from pytest_operator._subject import Subject, SubjectConfig  # noqa: E402
from pytest_operator._workload import Workload, steady  # noqa: E402


class Refused(Exception):
    """A run that cannot be measured: what went wrong, in one message."""


@dataclass(slots=True)
class Trial:
    mode: str
    time_to_detect: float
    ticks: list[float] = field(default_factory=list)
    """Seconds each tick took, observation to the end of its listeners."""
    frames: int = 0
    """Frames the view drew (0 without it)."""


class TickProbe:
    """Times every tick: the observation's start (a wrapped ``observe``) to the tick's
    event reaching this listener, the last one subscribed."""

    def __init__(self, observe: Callable[[], Awaitable[Observation]]) -> None:
        self._observe = observe
        self._started: float | None = None
        self.ticks: list[float] = []

    async def observe(self) -> Observation:
        self._started = time.perf_counter()
        return await self._observe()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Tick) and event.source == "monitor" and self._started is not None:
            self.ticks.append(time.perf_counter() - self._started)
            self._started = None


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


async def one_trial(
    mode: str,
    args: argparse.Namespace,
    cluster: EmbeddedCluster,
    sub: Subject,
    config: SubjectConfig,
) -> Trial:
    await cluster.reset()
    history = History()
    session = sub.open(cluster, config, history)
    view: LiveView | None = None
    frames: list[float] = []
    devnull = open(os.devnull, "w")  # closed in finally
    try:
        await wait_healthy(session.observe, timeout=60)
        await session.reset()
        probe = TickProbe(session.observe)
        session.observe = probe.observe  # type: ignore[method-assign]  # the monitor's observe
        injections = InjectionLog()
        operator = Operator(
            session, injections, interval=args.interval, engines=[CausalEngine()], history=history
        )
        if mode == "with":
            view = LiveView(Console(file=devnull, force_terminal=True, width=140, height=60))
            view.bind(operator, label=f"bench_live {mode}")
            draw = view.render

            def counted() -> RenderableType:
                frames.append(time.monotonic())
                return draw()

            view.render = counted  # type: ignore[method-assign]  # count the frames drawn
            view.start()
        operator._monitor.listeners.add(probe)  # last: after the operator's forwarding
        workload = Workload(session.requester(), session.targets, history)
        chaos = Chaos(Observed(cluster, session.observe))
        await workload.start(steady(rate=args.rate), keys="k1")
        try:
            await asyncio.sleep(args.warmup)
            calm = await operator.monitor(timeout=args.steady)
            if calm.violations or calm.timeline.errors:
                seen = [v.describe() for v in calm.violations] + [
                    e.error for e in calm.timeline.errors
                ]
                raise Refused(f"{mode}: before the fault, the healthy cluster showed {seen}")
            async with chaos.inject(kill(args.component)) as injection:
                injections.add(injection)
                run = await operator.monitor(until=args.invariant, timeout=args.timeout, settle=0)
        finally:
            await workload.aclose()
        if run.timeline.errors:
            raise Refused(f"{mode}: observations failed: {run.timeline.errors[0].error}")
        ttd = run.time_to_detect(args.invariant, args.component)
        if ttd is None:
            raise Refused(
                f"{mode}: {args.invariant}@{args.component} not confirmed within"
                f" {args.timeout} s (saw: {[v.describe() for v in run.violations]})"
            )
        if view is not None and not operator.listeners:
            raise Refused(f"{mode}: the view's listener raised and was dropped (see the log)")
        if view is not None:
            drawing = frames[-1] - frames[0] if len(frames) > 1 else 0.0
            if drawing < 0.5 * (args.steady + ttd):  # about 4 frames a second, all along
                raise Refused(f"{mode}: the view drew {len(frames)} frames in {drawing:.1f} s")
        return Trial(mode, ttd, probe.ticks, len(frames))
    finally:
        if view is not None:
            view.stop()
            view.unbind()
        devnull.close()
        await session.aclose()


async def main_async(args: argparse.Namespace) -> list[Trial]:
    sub = _registry.load(args.subject)
    config = sub.configure(args.nodes, {})
    cluster = EmbeddedCluster(sub.embedded_spec(config))
    trials: list[Trial] = []
    await cluster.start()
    try:
        for i in range(args.runs):
            order = ("without", "with") if i % 2 == 0 else ("with", "without")
            for mode in order:
                trial = await one_trial(mode, args, cluster, sub, config)
                trials.append(trial)
                print(
                    f"run {i + 1} {mode:<7} ttd {trial.time_to_detect:.3f} s"
                    f" ticks {len(trial.ticks)}"
                    f" tick median {statistics.median(trial.ticks) * 1000:.2f} ms"
                    f" frames {trial.frames}",
                    flush=True,
                )
    finally:
        await cluster.stop()
    return trials


def report(trials: list[Trial]) -> None:
    rows = {}
    for mode in ("without", "with"):
        mine = [t for t in trials if t.mode == mode]
        ticks = [x for t in mine for x in t.ticks]
        rows[mode] = (
            statistics.median(t.time_to_detect for t in mine),
            statistics.median(ticks),
            _quantile(ticks, 0.99),
            len(ticks),
        )
    print(f"{'view':<8} {'ttd_s':>8} {'tick_ms':>8} {'tick_p99_ms':>12} {'ticks':>6}")
    for mode, (ttd, tick, p99, n) in rows.items():
        print(f"{mode:<8} {ttd:8.3f} {tick * 1000:8.2f} {p99 * 1000:12.2f} {n:6d}")
    w, wo = rows["with"], rows["without"]
    print(f"ratio    {w[0] / wo[0]:7.2f}x {w[1] / wo[1]:7.2f}x {w[2] / wo[2]:11.2f}x")
    # run i's two trials ran back to back: their ratio is less exposed to the machine's
    # load drifting over the benchmark than the ratio of the pooled medians
    pairs = list(
        zip(
            [t for t in trials if t.mode == "with"],
            [t for t in trials if t.mode == "without"],
            strict=True,
        )
    )
    ttd_ratio = statistics.median(a.time_to_detect / b.time_to_detect for a, b in pairs)
    tick_ratio = statistics.median(
        statistics.median(a.ticks) / statistics.median(b.ticks) for a, b in pairs
    )
    print(f"per-run  {ttd_ratio:7.2f}x {tick_ratio:7.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="trials of each mode (default 5)")
    parser.add_argument("--subject", default="ratelimiter")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--component", default="node-1", help="the component killed")
    parser.add_argument("--invariant", default="node_down", help="the invariant awaited")
    parser.add_argument("--interval", type=float, default=0.25, help="monitor interval, s")
    parser.add_argument("--rate", type=float, default=100.0, help="workload requests/s")
    parser.add_argument("--warmup", type=float, default=2.0, help="traffic before the fault, s")
    parser.add_argument(
        "--steady", type=float, default=3.0, help="monitoring before the fault (ticks), s"
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="monitor timeout, s")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    print(
        f"bench_live: {args.subject}, kill({args.component}) until {args.invariant},"
        f" interval {args.interval} s, {args.rate:g} requests/s, {args.runs} run(s) per mode",
        flush=True,
    )
    try:
        trials = asyncio.run(main_async(args))
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    report(trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
