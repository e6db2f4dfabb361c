"""``pytest --operator-live`` as a person runs it: under a real pseudo-terminal, on a real
ratelimiter cluster, with pytest's default (fd) output capture. The screen shows the
components, the fault, the violation, the diagnosis and the recovery as the scenario runs;
the same run with its output piped is plain text without one escape code; Ctrl-C in the
middle of a fault stops the view, heals, and leaves none of the run's processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pytest_operator._process import pid_alive
from tests.pytester_runs import plain, run_in_terminal

pytestmark = pytest.mark.slow

SCENARIO = """
import asyncio

import pytest

from pytest_operator import FaultKind, kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


async def approve_restarts(action, args):
    return FaultKind.CRASH in action.remedies


async def test_killed_node(operator, chaos, workload):
    await workload.start(steady(rate=50), keys="k1")
    calm = await operator.monitor(timeout=1.5)  # frames of a healthy cluster
    calm.assert_no_violation()
    await chaos.leave(kill("node-1"))
    run = await operator.monitor(until="node_down", timeout=15, settle=1.0)
    run.assert_detected("node_down", component="node-1")
    await operator.assert_diagnosis(run)
    await asyncio.sleep(1.0)  # frames with the diagnosis
    operator.actions.approver = approve_restarts
    remediation = await operator.remediate(run)
    await operator.assert_recovered(remediation, within=15.0, sustain=1.0)
"""

INTERRUPTED = """
import asyncio, os

import pytest

from pytest_operator import kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


async def test_interrupted_in_a_fault(operator, chaos, cluster, workload):
    await workload.start(steady(rate=50), keys="k1")
    await chaos.leave(kill("node-1"))
    run = await operator.monitor(until="node_down", timeout=15)
    run.assert_detected("node_down", component="node-1")
    with open(os.environ["MARK"], "w") as f:
        f.write("in the fault")
    await asyncio.sleep(120)
"""

PROMPTED = """
import pytest

from pytest_operator import kill, steady

pytestmark = pytest.mark.subject("ratelimiter")


async def test_asked(operator, chaos, workload):
    await workload.start(steady(rate=50), keys="k1")
    await chaos.leave(kill("node-1"))
    run = await operator.monitor(until="node_down", timeout=15)
    remediation = await operator.remediate(run)  # restart_node is high risk: asked
    assert remediation.ok, remediation.describe()
    await operator.assert_recovered(remediation, within=15.0, sustain=1.0)
"""

HEADER = "pytest-operator  test_live_screen.py::test_killed_node"


def frames(text: str) -> list[str]:
    """The frames the view drew, each from its header line on (every redraw repeats it)."""
    return text.split(HEADER)[1:]


def test_the_screen_shows_the_run_as_it_happens(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_live_screen=SCENARIO)
    done = run_in_terminal(pytester.path, "--operator-live", timeout=240)
    text = done.text
    assert done.returncode == 0, text[-5000:]
    assert "operator: live view on (each scenario drawn while it runs)" in text
    drawn = frames(text)
    assert len(drawn) >= 8, f"{len(drawn)} frames:\n{text[-5000:]}"  # ~4 a second, not one

    def first(*patterns: str) -> int:
        """Index of the first frame matching every pattern."""
        for i, frame in enumerate(drawn):
            if all(re.search(p, frame) for p in patterns):
                return i
        pytest.fail(f"no frame shows {patterns}; the last:\n{drawn[-1]}")

    healthy = first(r"│ node-1 +service +up ", r"node_down +holds", r"none injected")
    fault = first(
        r"│ node-1 +service +DOWN \(refused\)",
        r"kill\(node-1\) +ACTIVE [0-9.]+ s \(left for the operator\)",
        r"node_down +VIOLATED at node-1 +[0-9.]+ s after the fault",
    )
    diagnosis = first(r"1\. crash\(node-1\) +\d+%", r"→ restart_node\(node=node-1\)")
    recovered = first(r"restart_node node=node-1 +OK \(1 attempt\)", r"recovered [0-9.]+ s after")
    assert healthy < fault <= diagnosis < recovered
    for name in ("redis", "node-2", "node-3"):
        assert re.search(rf"│ {name} +\w+ +up ", drawn[fault]), drawn[fault]
    assert re.search(r"ok /s +[1-9]\d*", drawn[fault])
    # the last frame stays, pytest's progress mark under it (not drawn over), and the
    # cursor is shown again
    assert re.search(r"╰─+╯ *\n\.\s+\[100%\]", text[text.rindex(HEADER) :]), text[-3000:]
    assert done.raw.rindex("\x1b[?25h") > done.raw.rindex("\x1b[?25l")


def test_with_the_output_piped_it_is_plain(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_live_screen=SCENARIO)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--operator-live", timeout=240)
    result.assert_outcomes(passed=1)
    out = result.stdout.str() + result.stderr.str()
    assert "\x1b" not in out
    result.stdout.fnmatch_lines(
        ["operator: live view off: the output is not a terminal (output stays plain)"]
    )
    assert "topology" not in out and "╭" not in out


def run_processes(base: Path) -> set[int]:
    """Live processes the inner run started: each inherits ``PYTEST_OPERATOR_RUN_DIR``
    = ``base`` (found by that environment entry, never by a name)."""
    needle = f"PYTEST_OPERATOR_RUN_DIR={base}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = Path(f"/proc/{entry.name}/environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0") and pid_alive(int(entry.name)):
                found.add(int(entry.name))
    return found


def test_ctrl_c_in_a_fault_stops_the_view_heals_and_stops_every_process(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(test_live_screen=INTERRUPTED)
    mark = tmp_path / "mark.json"
    base = tmp_path / "run"
    started: set[int] = set()
    sent: list[float] = []

    def interrupt(output: str, proc: subprocess.Popen[bytes], terminal: int) -> None:
        if not sent and mark.exists():
            started.update(run_processes(base))
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the foreground group
            sent.append(time.monotonic())

    done = run_in_terminal(
        pytester.path,
        "--operator-live",
        timeout=240,
        on_output=interrupt,
        env={"MARK": str(mark), "PYTEST_OPERATOR_RUN_DIR": str(base)},
    )
    text = done.text
    assert sent, f"the test never reached its fault:\n{text[-5000:]}"
    assert done.returncode == pytest.ExitCode.INTERRUPTED, text[-5000:]
    assert "KeyboardInterrupt" in text
    # the view stopped before pytest's report: its last frame, then the interruption
    assert text.rindex("pytest-operator  test_live_screen.py") < text.rindex("KeyboardInterrupt")
    assert re.search(r"node_down +VIOLATED at node-1", text)
    assert done.raw.rindex("\x1b[?25h") > done.raw.rindex("\x1b[?25l")
    assert len(started) >= 4, started  # redis, toxiproxy, the nodes still up
    deadline = time.monotonic() + 30
    while (left := {p for p in started if pid_alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes of the run left after Ctrl-C: {left}"
    assert plain(done.raw).count("1 passed") == 0


def test_a_question_at_the_terminal_pauses_the_view_and_the_answer_is_read(
    pytester: pytest.Pytester,
) -> None:
    """No approver: the operator asks at the terminal. The view stops drawing while the
    question is up (else the redraw would scroll it away), the typed answer is read
    despite fd capture, and the view goes on after it."""
    pytester.makepyfile(test_live_screen=PROMPTED)
    answered: list[int] = []

    def answer(output: str, proc: subprocess.Popen[bytes], terminal: int) -> None:
        if not answered and "[y/N]" in output:
            os.write(terminal, b"y\n")
            answered.append(len(output))

    done = run_in_terminal(pytester.path, "--operator-live", timeout=240, on_output=answer)
    text = done.text
    assert done.returncode == 0, text[-5000:]
    assert answered
    question = "operator: run restart_node node=node-1 (risk high)? [y/N]"
    assert question in text
    before, after = text.split(question, 1)
    assert "pytest-operator  test_live_screen.py::test_asked" in before  # drawn before it
    assert re.search(r"kill\(node-1\) +ACTIVE", before)
    # drawn again after the answer: the action approved at the terminal, and the recovery
    assert re.search(r"restart_node node=node-1 +OK \(1 attempt\)", after), after[-4000:]
    assert re.search(r"approved by terminal \(\w+\), risk high", after), after[-4000:]
    assert re.search(r"recovered [0-9.]+ s after the first action", after)
