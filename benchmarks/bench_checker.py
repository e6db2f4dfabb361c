"""Benchmark: how long the linearizability checker takes on register histories (issue 11).

    .venv/bin/python benchmarks/bench_checker.py                     # 1,000 and 10,000 ops, 5 runs
    .venv/bin/python benchmarks/bench_checker.py --ops 1000 --runs 3 --clients 20
    .venv/bin/python benchmarks/bench_checker.py --no-porcupine      # ours only

Each run generates (benchmarks/histories.py, seed ``--seed`` + run) a history of N ops over
5 keys from 10 clients against a simulated linearizable register, 5% of them indeterminate,
and the same history with one read made stale; ``check()`` judges both, timed. The table
shows medians over the runs. Target (issue 11): 10,000 ops judged in <= 1 s.

Porcupine (github.com/anishathalye/porcupine, the Go checker etcd's robustness tests use)
judges the same histories in the same run when tools/porcupine-check is built (it is not
built here; see BUILD_PORCUPINE in histories.py). Its time is the check alone, as the Go
program reports it (not its process start, nor JSON); the ratio ours / Porcupine is over
the linearizable histories. Porcupine's search is exponential in the indeterminate ops
pending when it has to prove a history NOT linearizable: on the stale-read history it gets
``--porcupine-timeout`` seconds and may end without a verdict, which is reported, not refused.

A run with errors is refused: the benchmark stops at the first one, says what went wrong
and exits 1 without the table. Errors are ``check()`` judging a linearizable history
invalid or the stale-read history valid, and Porcupine giving either the opposite verdict.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import signal
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from histories import BUILD_PORCUPINE, PORCUPINE, Generated, Spec, generate, run_porcupine

from pytest_operator._linearizable import check

TARGET_OPS = 10_000
TARGET_S = 1.0


class Refused(Exception):
    """A run that cannot be measured: what went wrong, in one message."""


@dataclass(frozen=True, slots=True)
class RunResult:
    ops: int
    indeterminate: int
    ours_s: float
    ours_stale_s: float
    found: str  # the anomaly kind check() reported on the stale-read history
    porcupine_s: float | None  # None: Porcupine not run; inf: no verdict in its time
    porcupine_stale_s: float | None  # the same, on the stale-read history


def _timed_check(history: Generated) -> tuple[float, bool, str]:
    gc.collect()
    began = time.perf_counter()
    result = check(history.ops)
    elapsed = time.perf_counter() - began
    kinds = ",".join(sorted({str(a.kind) for a in result.anomalies})) or "-"
    return elapsed, result.valid, kinds


def one_run(spec: Spec, porcupine: Path | None, porcupine_timeout: float) -> RunResult:
    history = generate(spec)
    stale = generate(replace(spec, anomaly=True))
    assert stale.stale is not None
    ours_s, valid, kinds = _timed_check(history)
    if not valid:
        raise Refused(f"check() judged a linearizable history invalid ({kinds}): {spec}")
    ours_stale_s, valid, found = _timed_check(stale)
    if valid:
        raise Refused(
            f"check() judged valid a history with a stale read (op {stale.stale.index} on"
            f" {stale.stale.key} returned {stale.stale.result!r}, really {stale.stale_was!r}):"
            f" {spec}"
        )
    porcupine_s = porcupine_stale_s = None
    if porcupine is not None:
        judged = run_porcupine(history.ops, timeout_s=porcupine_timeout, binary=porcupine)
        if judged.valid is False:
            raise Refused(f"Porcupine judged a linearizable history Illegal {judged.per_key}")
        porcupine_s = judged.elapsed_s if judged.valid else math.inf
        judged = run_porcupine(stale.ops, timeout_s=porcupine_timeout, binary=porcupine)
        if judged.valid is True:
            raise Refused(f"Porcupine judged Ok a history with a stale read: {spec}")
        porcupine_stale_s = judged.elapsed_s if judged.valid is False else math.inf
    return RunResult(
        ops=spec.ops,
        indeterminate=history.indeterminate,
        ours_s=ours_s,
        ours_stale_s=ours_stale_s,
        found=found,
        porcupine_s=porcupine_s,
        porcupine_stale_s=porcupine_stale_s,
    )


def _seconds(value: float | None, timeout: float) -> str:
    """A time for the table: ``-`` not run, ``>T`` no verdict in Porcupine's T seconds."""
    if value is None:
        return "-"
    return f">{timeout:g}" if math.isinf(value) else f"{value:.4f}"


def _median(values: list[float | None]) -> float | None:
    """The median (a run without a verdict counts as longer than any), None if not run."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _timed_out(value: float | None) -> bool:
    return value is not None and math.isinf(value)


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="1000,10000", help="history sizes, comma separated")
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--indeterminate", type=float, default=0.05, help="fraction of ops")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--porcupine", type=Path, default=PORCUPINE, help="the built program")
    parser.add_argument("--no-porcupine", action="store_true", help="time ours only")
    parser.add_argument(
        "--porcupine-timeout", type=float, default=10.0, help="seconds per Porcupine check"
    )
    return parser.parse_args()


def _porcupine(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The Porcupine program to run (None: not run), and what the header says of it."""
    if args.no_porcupine:
        return None, "not run (--no-porcupine)"
    if args.porcupine.is_file():
        return args.porcupine, f"{args.porcupine} (v1.3.1), {args.porcupine_timeout:g} s per check"
    return None, f"not built ({BUILD_PORCUPINE}); no ratio"


def _measure(
    args: argparse.Namespace, sizes: list[int], porcupine: Path | None
) -> dict[int, list[RunResult]] | None:
    """Every run of every size, each printed as it ends; None after a refused run."""
    results: dict[int, list[RunResult]] = {n: [] for n in sizes}
    for run in range(args.runs):
        for n in sizes:
            spec = Spec(
                ops=n, keys=args.keys, clients=args.clients,
                indeterminate=args.indeterminate, seed=args.seed + run,
            )  # fmt: skip
            try:
                result = one_run(spec, porcupine, args.porcupine_timeout)
            except Refused as refused:
                print(f"refused: run {run + 1}, {n} ops: {refused}", file=sys.stderr)
                print("no figures: a run with errors is not a measurement", flush=True)
                return None
            results[n].append(result)
            print(
                f"run {run + 1} {n} ops ({result.indeterminate} indeterminate):"
                f" ours {result.ours_s:.4f} s, stale read {result.ours_stale_s:.4f} s"
                f" (found {result.found}); porcupine"
                f" {_seconds(result.porcupine_s, args.porcupine_timeout)} s, stale read"
                f" {_seconds(result.porcupine_stale_s, args.porcupine_timeout)} s",
                flush=True,
            )
    return results


def _table(
    args: argparse.Namespace, sizes: list[int], results: dict[int, list[RunResult]]
) -> list[dict[str, object]]:
    """Print the medians per size; the same figures, for the JSON line."""
    print()
    print(f"medians of {args.runs} runs (seconds; ratio = ours / porcupine, linearizable history)")
    print(f"{'ops':>6} {'indet.':>6} {'ours':>8} {'ours stale':>10} {'porcupine':>10}"
          f" {'porc. stale':>12} {'ratio':>8}")  # fmt: skip
    summary: list[dict[str, object]] = []
    for n in sizes:
        rows = results[n]
        ours = statistics.median(r.ours_s for r in rows)
        ours_stale = statistics.median(r.ours_stale_s for r in rows)
        porc = _median([r.porcupine_s for r in rows])
        porc_stale = _median([r.porcupine_stale_s for r in rows])
        porc_finite = _finite(porc)
        ratio = ours / porc_finite if porc_finite else None
        timeout = args.porcupine_timeout
        print(
            f"{n:6d} {rows[0].indeterminate:6d} {ours:8.4f} {ours_stale:10.4f}"
            f" {_seconds(porc, timeout):>10} {_seconds(porc_stale, timeout):>12}"
            f" {'-' if ratio is None else f'{ratio:.1f}x':>8}"
        )
        summary.append({
            "ops": n, "indeterminate": rows[0].indeterminate, "ours_s": ours,
            "ours_stale_s": ours_stale, "porcupine_s": porc_finite,
            "porcupine_stale_s": _finite(porc_stale), "ratio": ratio,
            "porcupine_no_verdict": sum(1 for r in rows if _timed_out(r.porcupine_s)),
            "porcupine_stale_no_verdict": sum(1 for r in rows if _timed_out(r.porcupine_stale_s)),
        })  # fmt: skip
    for row in summary:
        for which, label in (
            ("porcupine_no_verdict", ""),
            ("porcupine_stale_no_verdict", "stale-read "),
        ):
            if row[which]:
                print(
                    f"porcupine: no verdict within {args.porcupine_timeout:g} s on {row[which]}"
                    f" of {args.runs} {label}histories of {row['ops']} ops"
                )
    return summary


def _target(args: argparse.Namespace, results: dict[int, list[RunResult]]) -> bool | None:
    """Whether issue 11's target is met (None: these runs do not measure it), printed."""
    if TARGET_OPS in results and args.keys == 5 and args.indeterminate == 0.05:
        met = statistics.median(r.ours_s for r in results[TARGET_OPS]) <= TARGET_S
        print(f"target (10,000 ops over 5 keys in <= 1 s): {'MET' if met else 'NOT MET'}")
        return met
    print("target (10,000 ops over 5 keys, 5% indeterminate, in <= 1 s): not measured")
    return None


def main() -> int:
    args = _arguments()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(n) for n in args.ops.split(",")]
    porcupine, note = _porcupine(args)
    print(
        f"checker benchmark: {args.keys} keys, {args.clients} clients,"
        f" {args.indeterminate:.0%} indeterminate, {args.runs} runs; porcupine: {note}"
    )
    results = _measure(args, sizes, porcupine)
    if results is None:
        return 1
    summary = _table(args, sizes, results)
    met = _target(args, results)
    print(json.dumps({
        "benchmark": "checker", "keys": args.keys, "clients": args.clients,
        "indeterminate": args.indeterminate, "runs": args.runs,
        "porcupine": porcupine is not None, "sizes": summary, "target_met": met,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
