"""LiveView.render() from real events: a real ratelimiter cluster, monitored, a node
killed, diagnosed, restarted by the operator and recovered, the view drawn on a recording
Console at each step and its text asserted; and the pieces that need no cluster (the
sparklines, the traffic from a history, the chapter banner, the layout by width)."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from pytest_operator._history import History, Op, Outcome
from pytest_operator._live import BARS, LiveView, Traffic, sparkline


def test_sparkline_scales_to_the_top_and_pads_on_the_left() -> None:
    assert sparkline([0, 5, 10], width=5) == "  " + BARS[0] + BARS[4] + BARS[7]
    assert sparkline([10, 10], width=2, top=20) == BARS[4] * 2
    assert sparkline([], width=3) == "   "
    assert sparkline([0, 0], width=2) == "  "  # nothing at all: blank, not a floor
    assert len(sparkline(range(100), width=30)) == 30  # the last 30 values


def op(index: int, send: float, outcome: Outcome, latency: float | None) -> Op:
    recv = None if latency is None else send + latency
    return Op(index, "node-1", "k1", send, send, recv, outcome)


def test_traffic_counts_each_whole_second_by_outcome_and_reads_only_new_ops() -> None:
    history = History()
    for i in range(8):
        history.append(op(i, 100.1 + i * 0.1, Outcome.OK, 0.010))
    history.append(op(8, 100.95, Outcome.REJECTED, 0.030))
    history.append(op(9, 101.2, Outcome.TIMEOUT, None))
    traffic = Traffic(history=history)
    traffic.ingest()
    assert traffic.seen == 10
    seconds = traffic.window(now=102.5, width=3)
    assert seconds == [99, 100, 101]
    assert traffic.series(Outcome.OK, seconds) == [0, 8, 0]
    assert traffic.series(Outcome.REJECTED, seconds) == [0, 1, 0]
    assert traffic.series(Outcome.TIMEOUT, seconds) == [0, 0, 1]
    assert traffic.latency_series(0.5, seconds)[1] == pytest.approx(10.0)
    assert traffic.latency_series(0.99, seconds)[1] == pytest.approx(30.0)
    history.append(op(10, 101.5, Outcome.ERROR, 0.002))
    traffic.ingest()
    assert traffic.seen == 11
    assert traffic.series(Outcome.ERROR, seconds) == [0, 0, 1]
    assert traffic.series(Outcome.OK, seconds) == [0, 8, 0]  # nothing counted twice


def text_of(view: LiveView, width: int) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(view.render())
    return console.export_text()


def test_an_unbound_view_draws_its_empty_panels_and_the_chapter_banner() -> None:
    view = LiveView(title="pytest-operator demo")
    text = text_of(view, 120)
    for title in ("topology", "invariants", "faults", "diagnosis", "actions"):
        assert title in text
    assert "none injected" in text and "none yet" in text and "none taken" in text
    view.chapter("2/6  A fault injected", "Enter: next chapter, q: quit")
    first = text_of(view, 120).splitlines()[0]
    assert first == "2/6  A fault injected  Enter: next chapter, q: quit"
    view.chapter("")
    assert "A fault injected" not in text_of(view, 120)
    assert text_of(view, 120).splitlines()[0].startswith("pytest-operator demo")


def test_a_violation_confirmed_again_by_a_later_monitor_run_keeps_its_first_detection() -> None:
    from dataclasses import replace

    from pytest_operator._events import ViolationCleared, ViolationConfirmed
    from pytest_operator._invariants import Category, Violation

    def at(t: float) -> str:
        return time.strftime("at %H:%M:%S", time.localtime(t))

    view = LiveView()
    first = Violation("node_down", Category.AVAILABILITY, "node-1", "down", 1000.0, 1000.5)
    view.on_event(ViolationConfirmed(first))
    again = replace(first, first_seen=1010.0, confirmed_at=1010.5)
    view.on_event(ViolationConfirmed(again))  # the next monitor run sees it still down
    text = text_of(view, 150)
    assert at(1000.5) in text and at(1010.5) not in text
    view.on_event(ViolationCleared(replace(again, cleared_at=1012.0)))
    later = replace(first, first_seen=1020.0, confirmed_at=1020.5)
    view.on_event(ViolationConfirmed(later))  # a new episode after it cleared: detected anew
    text = text_of(view, 150)
    assert at(1020.5) in text and "VIOLATED at node-1" in text


def test_panels_sit_side_by_side_when_wide_and_stacked_when_narrow() -> None:
    view = LiveView()
    wide = text_of(view, 140).splitlines()
    narrow = text_of(view, 80).splitlines()
    assert any("topology" in line and "invariants" in line for line in wide)
    assert not any("topology" in line and "invariants" in line for line in narrow)
    assert max(len(line) for line in narrow) <= 80
    assert max(len(line) for line in wide) <= 140
    assert view.running is False
    view.stop()  # idempotent, never started


SCENARIO = """
import io
import re

import pytest
from rich.console import Console

from pytest_operator import FaultKind, kill, steady
from pytest_operator._events import Diagnosed, FaultInjected, Tick, ViolationConfirmed
from pytest_operator._live import LiveView

pytestmark = pytest.mark.subject("ratelimiter")


def screen(view, width=150):
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(view.render())
    return console.export_text()


async def approve_restarts(action, args):
    return FaultKind.CRASH in action.remedies


async def test_the_view_follows_the_run(operator, chaos, workload):
    view = LiveView(title="live-test")
    view.bind(operator, label="killed node")
    events = []
    operator.subscribe(events.append)
    await workload.start(steady(rate=50), keys="k1")
    calm = await operator.monitor(timeout=2.5)
    calm.assert_no_violation()
    text = screen(view)
    assert "live-test  killed node" in text
    for name in ("redis", "node-1", "node-2", "node-3"):
        assert re.search(rf"│ {name} +\\w+ +up ", text), text
    assert re.search(r"node_down +holds", text), text
    for name in ("node-1", "node-2", "node-3"):  # each link's state, as its source sees it
        assert re.search(rf"│ {name} +redis up ", text), text
    assert "none injected" in text and "none yet" in text and "none taken" in text
    assert int(re.search(r"ok /s +(\\d+)", text).group(1)) > 0, text

    await chaos.leave(kill("node-1"))
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", component="node-1")
    text = screen(view)
    assert re.search(r"│ node-1 +service +DOWN \\(refused\\)", text), text
    ttd = run.time_to_detect("node_down", "node-1")
    assert re.search(rf"node_down +VIOLATED at node-1 +{ttd:.2f} s after the fault", text), text
    assert re.search(r"kill\\(node-1\\) +ACTIVE [0-9.]+ s \\(left for the operator\\)", text), text

    await operator.assert_diagnosis(run)
    text = screen(view)
    assert re.search(r"1\\. crash\\(node-1\\) +\\d+%", text), text
    assert "+ node-1 refused the monitor's probe" in text, text
    assert "→ restart_node(node=node-1)" in text, text

    operator.actions.approver = approve_restarts
    remediation = await operator.remediate(run)
    assert remediation.ok
    recovery = await operator.assert_recovered(remediation, within=15.0, sustain=1.0)
    text = screen(view)
    assert re.search(r"restart_node node=node-1 +OK \\(1 attempt\\)", text), text
    assert "approved by approve_restarts, risk high" in text, text
    assert f"recovered {recovery.time_to_recover:.2f} s after the first action" in text, text
    assert re.search(r"node_down +cleared", text), text
    assert re.search(r"│ node-1 +\\w+ +up ", text), text

    narrow = screen(view, width=90)
    assert max(len(line) for line in narrow.splitlines()) <= 90
    assert "crash(node-1)" in narrow and "VIOLATED" not in narrow

    # the events: the fault before its detection before the diagnosis, and every monitor
    # tick's observation one the monitor recorded
    kinds = [type(e) for e in events]
    assert kinds.index(FaultInjected) < kinds.index(ViolationConfirmed) < kinds.index(Diagnosed)
    recorded = {id(o) for r in operator.runs for o in r.timeline.observations}
    ticks = [e for e in events if isinstance(e, Tick) and e.source == "monitor"]
    assert ticks and all(id(t.observation) in recorded for t in ticks)
    assert any(isinstance(e, Tick) and e.source == "recovery" for e in events)
    view.unbind()
    assert len(operator.listeners) == 1  # the view's gone, this test's own stays
"""


@pytest.mark.slow
def test_render_follows_a_real_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_live_render=SCENARIO)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=240)
    result.assert_outcomes(passed=1)
