"""The scenario suite's wall time, serial and with pytest-xdist, and time to detect per scenario.

Runs the real scenario suite in subprocesses and reads what the plugin wrote
(.run/scenarios.json, .run/accuracy.json; each pytest run gets its own --rootdir under a
temporary folder, so runs of other people in the same checkout cannot mix in):

1. the suite once (1 trial) serially and once with ``pytest -n N`` (``--workers N``,
   default 2; ``--workers 1`` measures only the serial run), alternating which goes
   first, ``--runs`` times: the median wall time of each (pytest start included) and
   their ratio;
2. the suite serially with ``--trials T``: its wall time, the median time to detect per
   scenario and the diagnosis accuracy.

``--subject`` picks the subject's scenarios (default ``ratelimiter``). Arguments after the
options (or after ``--``) go to every pytest run, e.g. ``-k node_kill``:

    .venv/bin/python benchmarks/bench_scenarios.py --trials 3
    .venv/bin/python benchmarks/bench_scenarios.py --subject etcd --workers 1 --trials 3
    .venv/bin/python benchmarks/bench_scenarios.py --runs 3 --workers 2 -- -k "kill or pause"

A run with errors is refused: the benchmark stops at the first one, shows the end of
pytest's output and exits 1 without figures. Errors are: pytest's exit status other than
0 (a failed or erroring scenario, none collected, a crashed worker), a pytest run over
``--timeout`` seconds, and a results file that is missing or does not hold one passed
result per passed test. A scenario that detects nothing is not an error in itself (the
control scenarios detect nothing by design); its test fails when that is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pytest_operator._accuracy import EngineAccuracy

ROOT = Path(__file__).resolve().parents[1]


class Refused(Exception):
    """A run that cannot be measured: what went wrong, in one message."""


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """One scenario trial as the plugin recorded it in .run/scenarios.json."""

    name: str
    outcome: str
    detected: str | None
    time_to_detect: float | None


@dataclass(frozen=True, slots=True)
class SuiteRun:
    """One pytest run of the suite: how long it took and what it recorded."""

    label: str
    seconds: float
    scenarios: tuple[ScenarioRun, ...]
    accuracy: tuple[EngineAccuracy, ...]


def run_suite(
    label: str, rootdir: Path, workers: int, trials: int, pytest_args: list[str], timeout: float
) -> SuiteRun:
    """Run the suite once; Refused unless every test passed and every result is recorded."""
    rootdir.mkdir(parents=True)
    command = [sys.executable, "-m", "pytest", "scenarios", "-q", "-p", "no:cacheprovider",
               f"--rootdir={rootdir}", f"--trials={trials}"]  # fmt: skip
    if workers > 1:
        command += ["-n", str(workers)]
    command += pytest_args
    began = time.monotonic()
    returncode, stdout, stderr = _pytest(command, timeout)
    seconds = time.monotonic() - began
    output = stdout + stderr
    if returncode is None:
        raise Refused(f"{label}: pytest ran over {timeout:.0f} s{_tail(output)}")
    if returncode != 0:
        raise Refused(f"{label}: pytest exited with {returncode}{_tail(output)}")
    passed = _passed(stdout)
    run_dir = rootdir / ".run"
    try:
        recorded = json.loads((run_dir / "scenarios.json").read_text())
        accuracy = tuple(
            EngineAccuracy.from_dict(row)
            for row in json.loads((run_dir / "accuracy.json").read_text())["summary"]
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise Refused(f"{label}: no results from the plugin ({error}){_tail(output)}") from None
    scenarios = tuple(
        ScenarioRun(
            s["scenario"].split("::")[-1].split("[")[0],
            s["outcome"],
            s["detected"],
            s["time_to_detect"],
        )
        for s in recorded
    )
    not_passed = [f"{s.name}: {s.outcome}" for s in scenarios if s.outcome != "passed"]
    if not_passed or len(scenarios) != passed:
        raise Refused(
            f"{label}: {passed} tests passed but the plugin recorded {len(scenarios)} results"
            f"{' (' + ', '.join(not_passed) + ')' if not_passed else ''}{_tail(output)}"
        )
    return SuiteRun(label, seconds, scenarios, accuracy)


def _pytest(command: list[str], timeout: float) -> tuple[int | None, str, str]:
    """Run pytest in its own process group: exit status (None past ``timeout``), stdout,
    stderr. Past the timeout, or when this process is stopped, pytest gets SIGINT (it tears
    its clusters down as on Ctrl-C), then SIGKILL after 30 s."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return process.returncode, stdout, stderr
    except subprocess.TimeoutExpired:
        stdout, stderr = _interrupt(process)
        return None, stdout, stderr
    except BaseException:
        _interrupt(process)
        raise


def _interrupt(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        os.killpg(process.pid, signal.SIGINT)
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.communicate(timeout=30)
    except ProcessLookupError:
        return process.communicate(timeout=30)


def _passed(stdout: str) -> int:
    """The number of passed tests in pytest's last summary line ("12 passed in 51.2s")."""
    lines = [line for line in stdout.splitlines() if " in " in line and "passed" in line]
    found = re.search(r"(\d+) passed", lines[-1]) if lines else None
    return int(found.group(1)) if found else 0


def _tail(output: str, lines: int = 15) -> str:
    text = "\n".join("    " + line for line in output.strip().splitlines()[-lines:])
    return f"\n  pytest's output ends:\n{text}" if text else ""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def report(
    serial: list[SuiteRun], parallel: list[SuiteRun], trials: SuiteRun, workers: int, runs: int
) -> None:
    load = os.getloadavg()[0]
    print(f"# scenario suite, load average {load:.1f} on {os.cpu_count()} cores")
    one = statistics.median(r.seconds for r in serial)
    print(f"suite wall time (1 trial, incl. pytest start): {one:.1f} s (median of {runs})")
    if parallel:
        many = statistics.median(r.seconds for r in parallel)
        print(f"suite wall time (1 trial, -n {workers}): {many:.1f} s (median of {runs})")
        print(f"serial / -n {workers}: {one / many:.2f}x")
    print(f"suite wall time ({trials.label}): {trials.seconds:.1f} s")
    ttd: dict[str, list[float]] = defaultdict(list)
    detected: dict[str, str] = {}
    for s in trials.scenarios:
        if s.time_to_detect is not None:
            ttd[s.name].append(s.time_to_detect)
            detected[s.name] = s.detected or "-"
    print("\n| scenario | detected first | median time to detect | runs |")
    print("|---|---|---|---|")
    for name in sorted(ttd):
        v = ttd[name]
        print(f"| {name} | {detected[name]} | {statistics.median(v):.2f} s | {len(v)} |")
    print("\n| engine | cases | AC@1 | AC@3 | Avg@5 | controls | FP rate | median diagnose |")
    print("|---|---|---|---|---|---|---|---|")
    for a in trials.accuracy:
        med = a.median_time_to_diagnose
        print(
            f"| {a.engine} | {a.cases} | {_pct(a.ac1)} | {_pct(a.ac3)} | {_pct(a.avg5)} |"
            f" {a.controls} | {_pct(a.false_positive_rate)} |"
            f" {'-' if med is None else f'{med * 1000:.1f} ms'} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--subject", default="ratelimiter", help="whose scenarios to run")
    parser.add_argument("--trials", type=int, default=3, help="trials per scenario, step 2")
    parser.add_argument("--runs", type=int, default=1, help="runs of step 1 (medians)")
    parser.add_argument(
        "--workers", type=int, default=2, help="pytest-xdist workers against serial (1: none)"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds allowed to one pytest run"
    )
    args, pytest_args = parser.parse_known_args()
    # SIGTERM (a `timeout` wrapper, say) unwinds like Ctrl-C: pytest is interrupted first
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pytest_args = [f"--subject={args.subject}", *(a for a in pytest_args if a != "--")]
    if args.workers < 1 or args.runs < 1 or args.trials < 1:
        parser.error("--workers, --runs and --trials must be at least 1")
    serial: list[SuiteRun] = []
    parallel: list[SuiteRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-scenarios-") as tmp:
        base = Path(tmp)
        try:
            for run in range(args.runs):
                modes = [1] if args.workers == 1 else [1, args.workers]
                for workers in modes if run % 2 == 0 else modes[::-1]:
                    label = f"run {run + 1}, " + ("serial" if workers == 1 else f"-n {workers}")
                    result = run_suite(
                        label, base / f"run{run}-n{workers}", workers, 1, pytest_args, args.timeout
                    )
                    (serial if workers == 1 else parallel).append(result)
                    print(f"{label}: {result.seconds:.1f} s", flush=True)
            trials = run_suite(
                f"{args.trials} trials", base / "trials", 1, args.trials, pytest_args, args.timeout
            )
        except Refused as refused:
            print(f"refused: {refused}", file=sys.stderr)
            print("no figures: a run with errors is not a measurement", flush=True)
            return 1
    report(serial, parallel, trials, args.workers, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
