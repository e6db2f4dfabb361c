"""Time to detect per scenario (median over trials) and the whole suite's wall time.

Runs the real scenario suite with ``--trials N`` in a subprocess, then reads what the
plugin wrote (.run/scenarios.json, .run/accuracy.json). Run on demand:

    .venv/bin/python benchmarks/bench_scenarios.py --trials 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()

    # one trial alone gives the suite's wall time as users run it
    t0 = time.monotonic()
    single = subprocess.run(
        [sys.executable, "-m", "pytest", "scenarios", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    suite_s = time.monotonic() - t0
    t0 = time.monotonic()
    repeated = subprocess.run(
        [
            sys.executable, "-m", "pytest", "scenarios", "-q", "-p", "no:cacheprovider",
            f"--trials={args.trials}", *args.pytest_args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )  # fmt: skip
    trials_s = time.monotonic() - t0
    if single.returncode or repeated.returncode:
        print(single.stdout[-3000:], repeated.stdout[-3000:])
        return 1
    scenarios = json.loads((ROOT / ".run" / "scenarios.json").read_text())
    ttd: dict[str, list[float]] = defaultdict(list)
    detected: dict[str, str] = {}
    for s in scenarios:
        name = s["scenario"].split("::")[-1].split("[")[0]
        if s["time_to_detect"] is not None:
            ttd[name].append(s["time_to_detect"])
            detected[name] = s["detected"]
    load = os.getloadavg()[0]
    print(f"# scenario suite, load average {load:.1f} on {os.cpu_count()} cores")
    print(f"suite wall time (1 trial, incl. pytest start): {suite_s:.1f} s")
    print(f"suite wall time ({args.trials} trials): {trials_s:.1f} s")
    print("\n| scenario | detected first | median time to detect | runs |")
    print("|---|---|---|---|")
    for name in sorted(ttd):
        v = ttd[name]
        print(f"| {name} | {detected[name]} | {statistics.median(v):.2f} s | {len(v)} |")
    acc = json.loads((ROOT / ".run" / "accuracy.json").read_text())
    print("\n| engine | cases | AC@1 | AC@3 | Avg@5 | controls | FP rate | median diagnose |")
    print("|---|---|---|---|---|---|---|---|")
    for a in acc["summary"]:

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{x:.0%}"

        med = a["median_time_to_diagnose"]
        print(
            f"| {a['engine']} | {a['cases']} | {pct(a['ac1'])} | {pct(a['ac3'])} |"
            f" {pct(a['avg5'])} | {a['controls']} | {pct(a['false_positive_rate'])} |"
            f" {'-' if med is None else f'{med * 1000:.1f} ms'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
