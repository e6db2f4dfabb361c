"""``operator demo`` as a person uses it: in a terminal (tmux), chapter by chapter, keys
pressed and the screen read at each chapter, for both subjects; ``--auto`` to its end;
``q`` and Ctrl-C in the middle leaving no process of the run behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_operator._actions import Action, Param, Risk
from pytest_operator._causes import FaultKind
from pytest_operator._demo import CrashTarget, crash_targets
from tests.demo.conftest import OPERATOR, ROOT, Demo

pytestmark = pytest.mark.slow

START_S = 120.0
"""A cluster's start, its health, the first chapter's monitor, on a loaded machine."""
STEP_S = 60.0
"""One chapter's work: detection, a diagnosis, a restart and its recovery."""
EXIT_S = 90.0
"""Healing the fault and stopping every process."""

# the processes each subject's cluster runs: toxiproxy, the store and three nodes; three
# members
PROCESSES = {"ratelimiter": 5, "etcd": 4}


@pytest.mark.parametrize("subject", ["ratelimiter", "etcd"])
def test_each_chapter_on_screen_keys_pressed(demo: Demo, subject: str) -> None:
    demo.start("--subject", subject)

    demo.wait_for(
        r"Chapter 1/6 · Healthy traffic 50 requests/s",
        START_S,
        also=[
            "components answer",
            "[Enter/space: next · q: quit]",
            f"operator demo · {subject}",
            "topology",  # the live view under the banner
            "invariants",
        ],
    )
    demo.keys("Enter")

    killed = demo.wait_for(r"Chapter 2/6 · A fault kill\((\S+)\)", STEP_S).group(1)
    demo.wait_for(
        r"Chapter 2/6",
        STEP_S,
        also=[f"kill({killed}): its process group got SIGKILL and is left down for the operator"],
    )
    demo.keys("Enter")

    demo.wait_for(
        r"Chapter 3/6 · Detection Detected: \w+ at ",
        STEP_S,
        also=[f" at {killed}, confirmed ", "s after the fault", "VIOLATED"],
    )
    demo.keys("Space")

    demo.wait_for(
        r"Chapter 4/6 · Diagnosis causal: ",
        STEP_S,
        also=[f"causal: crash({killed}), confidence ", "the injected cause", "Recommends: "],
    )
    demo.keys("Enter")

    demo.wait_for(
        r"Chapter 5/6 · Remediation The operator asks to run",
        STEP_S,
        also=[f"={killed}), risk high. Approve?", "[Enter/y: approve · n: reject · q: quit]"],
    )
    demo.keys("y")

    demo.wait_for(
        r"Chapter 6/6 · Recovery .*Recovered [\d.]+ s after the first action",
        STEP_S,
        also=[f"={killed}): ok"],
    )
    demo.keys("Enter")

    assert demo.wait_exit(EXIT_S) == 0, demo.text
    assert "the loop closed: detected, diagnosed, remedied, recovered" in demo.text
    (run,) = demo.run_dirs()
    audit = (run / "audit.jsonl").read_text()
    assert '"approved_by": "demo (key press)"' in audit and '"outcome": "ok"' in audit
    demo.assert_nothing_left(at_least=PROCESSES[subject])


def test_q_in_the_middle_heals_and_stops_everything(demo: Demo) -> None:
    demo.start("--subject", "ratelimiter")
    demo.wait_for(r"Chapter 1/6 · Healthy traffic 50 requests/s", START_S)
    demo.keys("Enter")
    demo.wait_for(r"Chapter 2/6 · A fault kill\(", STEP_S)
    demo.keys("Enter")
    demo.wait_for(r"Chapter 3/6 · Detection Detected", STEP_S)
    demo.keys("q")
    assert demo.wait_exit(EXIT_S) == 0, demo.text
    assert "operator demo: quit; the fault healed and the cluster stopped" in demo.text
    assert "Chapter 4/6" not in demo.text
    demo.assert_nothing_left(at_least=PROCESSES["ratelimiter"])


def test_a_rejected_remediation_runs_nothing(demo: Demo) -> None:
    demo.start("--subject", "ratelimiter")
    demo.wait_for(r"Chapter 1/6 · Healthy traffic 50 requests/s", START_S)
    for chapter in (r"2/6 · A fault kill\(", r"3/6 · Detection Detected", r"4/6 · Diagnosis"):
        demo.keys("Enter")
        demo.wait_for(f"Chapter {chapter}", STEP_S)
    demo.keys("Enter")
    demo.wait_for(r"Chapter 5/6 · Remediation .* Approve\?", STEP_S)
    demo.keys("n")
    demo.wait_for(
        r"Chapter 6/6 · Recovery Not remedied: restart_node\(node=\S+\): refused",
        STEP_S,
        also=["was not approved", "The fault stays until the demo ends, which heals it."],
    )
    demo.keys("Enter")
    assert demo.wait_exit(EXIT_S) == 0, demo.text
    assert "operator demo: the person rejected the remediation" in demo.text
    (run,) = demo.run_dirs()
    (entry,) = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
    assert (entry["decision"], entry["outcome"], entry["attempts"]) == ("rejected", "refused", 0)
    demo.assert_nothing_left(at_least=PROCESSES["ratelimiter"])


def test_ctrl_c_with_the_fault_in_place_heals_and_stops_everything(demo: Demo) -> None:
    demo.start("--subject", "etcd")
    demo.wait_for(r"Chapter 1/6 · Healthy traffic 50 requests/s", START_S)
    demo.keys("Enter")
    # the view's faults panel: the kill is in place
    demo.wait_for(r"Chapter 2/6 · A fault kill\(", STEP_S, also=["ACTIVE"])
    demo.keys("C-c")
    assert demo.wait_exit(EXIT_S) == 130, demo.text
    assert "operator demo: interrupted; the fault healed and the cluster stopped" in demo.text
    demo.assert_nothing_left(at_least=PROCESSES["etcd"])


def test_ctrl_c_while_the_cluster_starts_stops_what_started(demo: Demo) -> None:
    demo.start("--subject", "etcd")
    deadline = time.monotonic() + START_S
    while not demo.seen:  # the first process of the cluster is up
        assert time.monotonic() < deadline, f"no pidfile after {START_S:g} s: {demo.screen()}"
        demo.record_pids()
        time.sleep(0.05)
    demo.keys("C-c")
    assert demo.wait_exit(EXIT_S) == 130, demo.text
    assert "operator demo: interrupted" in demo.text
    assert "Chapter 2/6" not in demo.text
    demo.assert_nothing_left(at_least=1)


def test_auto_without_a_terminal_prints_each_chapter_plain_and_exports_one_as_svg(
    tmp_path: Path,
) -> None:
    """Output to a pipe and no input (as in CI): --auto runs through on its own, the
    chapters as lines of text, in order, with --auto's approval (audited as such); the
    run ends with exit status 0, and --svg saved chapter 5's screen."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PATH"] = f"{ROOT / '.bin'}:{env.get('PATH', '')}"
    env["PYTEST_OPERATOR_RUN_DIR"] = str(tmp_path / "runs")
    svg = tmp_path / "chapter.svg"
    command = [str(OPERATOR), "demo", "--subject", "ratelimiter", "--auto", "--pause", "0.2"]
    proc = subprocess.run(
        [*command, "--svg", str(svg)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_S + 3 * STEP_S,
        env=env,
        cwd=ROOT,
    )
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    titles = [
        "== Chapter 1/6 · Healthy traffic ==",
        "== Chapter 2/6 · A fault ==",
        "== Chapter 3/6 · Detection ==",
        "== Chapter 4/6 · Diagnosis ==",
        "== Chapter 5/6 · Remediation ==",
        "== Chapter 6/6 · Recovery ==",
        "== Stopping ==",
        "operator demo: the loop closed",
    ]
    positions = [out.find(t) for t in titles]
    assert -1 not in positions and positions == sorted(positions), out
    assert "[--auto approves in 0.2 s · q: quit]" in out
    assert "\x1b[" not in proc.stdout  # plain text, no terminal codes
    (audit,) = (tmp_path / "runs").glob("*/audit.jsonl")
    assert '"approved_by": "demo --auto"' in audit.read_text()
    text = svg.read_text()
    assert text.startswith("<svg") and "operator&#160;demo&#160;--subject&#160;ratelimiter" in text
    assert "Chapter&#160;5/6" in text and "risk&#160;high" in text


def test_claude_without_a_key_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    proc = subprocess.run(
        [str(OPERATOR), "demo", "--subject", "etcd", "--diagnoser", "claude"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "operator demo: error: --diagnoser=claude: ANTHROPIC_API_KEY is not set" in proc.stderr


def test_a_bad_subject_names_it_and_the_valid_ones() -> None:
    proc = subprocess.run(
        [str(OPERATOR), "demo", "--subject", "tikv"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert (
        "argument --subject: invalid choice: 'tikv' (choose from 'etcd', 'ratelimiter')"
        in proc.stderr
    )


def test_a_bad_pause_is_a_usage_error() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_operator._cli",
            "demo",
            "--subject",
            "etcd",
            "--auto",
            "--pause",
            "-1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "operator demo: error: --pause -1.0: must be >= 0" in proc.stderr


async def _restart(args: object) -> str:
    return "restarted"


def test_the_fault_is_a_crash_the_catalogue_can_remedy() -> None:
    def action(name: str, remedies: set[FaultKind], choices: tuple[str, ...]) -> Action:
        return Action(
            name,
            name,
            Risk.HIGH,
            (Param("who", str, choices=choices),),
            _restart,
            remedies=frozenset(remedies),
            target="who",
        )

    actions = [
        action("resize", {FaultKind.OVERLOAD}, ("a", "b")),
        action("restart_b", {FaultKind.CRASH, FaultKind.PAUSE}, ("b",)),
        action("restart_any", {FaultKind.CRASH}, ()),
    ]
    assert crash_targets(actions, ["a", "b", "c"]) == [
        CrashTarget("b", "restart_b"),
        CrashTarget("a", "restart_any"),
        CrashTarget("c", "restart_any"),
    ]
    assert crash_targets(actions[:1], ["a"]) == []
