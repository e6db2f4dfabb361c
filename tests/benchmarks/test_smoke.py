"""A short run of every benchmark, so a refactor cannot silently break a figure the
README quotes; and benchmarks refusing runs with errors, against real failing subjects.

Each benchmark runs as its own process with tiny parameters (a second of load, one run)
and must exit 0 and print, in the README's words, the figures the README quotes. These
are smoke runs: they check that the figures exist and are sane, not their targets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from tests.benchmarks.conftest import BENCHMARKS, run_benchmark

NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def figures(pattern: str, text: str) -> tuple[float, ...]:
    """The numbers ``pattern`` captures in ``text``; fails the test if it is not there."""
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"no line matching {pattern!r} in:\n{text}"
    return tuple(float(g) for g in found.groups())


# -- bench_service: one node against the naive baseline ---------------------------------


@pytest.mark.slow
def test_bench_service_prints_the_table_and_the_ratios() -> None:
    done = run_benchmark(
        "bench_service.py", "--runs", "1", "--duration", "1", "--warmup", "0.5",
        "--connections", "16", "--keys", "100", "--loadgen", "python", timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for subject in ("baseline", "service"):
        rate, p50, p99, cpu_us = figures(
            rf"^{subject} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}%$", out
        )[:4]
        assert rate > 50, f"{subject}: {rate} decisions/s in a second of load"
        assert 0 < p50 <= p99
        assert cpu_us > 0
        assert re.search(rf"^run 1 {subject} .* errors 0 ", out, re.MULTILINE), out
    throughput, p50_ratio, p99_ratio = figures(rf"^ratio +{NUMBER}x +{NUMBER}x +{NUMBER}x$", out)
    assert throughput > 0 and p50_ratio > 0 and p99_ratio > 0
    assert figures(rf"^per-run +{NUMBER}x +{NUMBER}x", out)[0] == pytest.approx(
        throughput, abs=0.01
    )
    assert "load from service_loadgen.py" in out


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (./dev setup does)")
def test_bench_service_with_wrk() -> None:
    done = run_benchmark(
        "bench_service.py", "--runs", "1", "--duration", "1", "--connections", "16",
        "--keys", "100", "--loadgen", "wrk", timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "load from wrk" in done.stdout
    for subject in ("baseline", "service"):
        assert figures(rf"^{subject} +{NUMBER} ", done.stdout)[0] > 50
    assert figures(rf"^ratio +{NUMBER}x +{NUMBER}x +{NUMBER}x$", done.stdout)[0] > 0


BROKEN_BASELINE = """
import sys

sys.path.insert(0, {benchmarks!r})

import naive_baseline
from ratelimiter_service._scripts import _load

# the bug of issue 9: sliding_log.lua without the check prelude that defines `now`
naive_baseline.SCRIPT = _load("sliding_log")
naive_baseline.main()
"""


def test_bench_service_refuses_a_run_whose_baseline_fails(tmp_path: Path) -> None:
    baseline = tmp_path / "broken_baseline.py"
    baseline.write_text(BROKEN_BASELINE.format(benchmarks=str(BENCHMARKS)))
    done = run_benchmark(
        "bench_service.py", "--runs", "1", "--duration", "1", "--warmup", "0.3",
        "--connections", "8", "--loadgen", "python", "--baseline", str(baseline), timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "refused: run 1 baseline: the load generator saw" in done.stderr
    assert "HTTP 500" in done.stderr
    assert "script calls failed in Redis" in done.stderr
    assert "Script attempted to access nonexistent global variable 'now'" in done.stderr
    assert "ratio" not in done.stdout and "decisions/s" not in done.stdout
    assert "no figures" in done.stdout


# -- service_loadgen: the load generator on its own -------------------------------------


def _loadgen(url: str) -> tuple[int, dict[str, object], str]:
    port = url.rsplit(":", 1)[1]
    done = run_benchmark(
        "service_loadgen.py", "--port", port, "--connections", "4", "--duration", "0.5",
        "--warmup", "0.2", "--keys", "10", timeout=60,
    )  # fmt: skip
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return done.returncode, report, done.stderr


def test_loadgen_refuses_a_node_that_answers_without_redis(degraded_node: str) -> None:
    returncode, report, stderr = _loadgen(degraded_node)
    assert returncode == 1
    kinds = report["error_kinds"]
    assert isinstance(kinds, dict) and kinds.get("degraded answer", 0) > 0, report
    assert report["rate"] is None and report["p99_ms"] is None
    assert "service_loadgen: refused:" in stderr and "degraded answer" in stderr


def test_loadgen_refuses_500s(baseline_answering_500: str) -> None:
    returncode, report, stderr = _loadgen(baseline_answering_500)
    assert returncode == 1
    kinds = report["error_kinds"]
    assert isinstance(kinds, dict) and kinds.get("HTTP 500", 0) > 0, report
    assert report["rate"] is None
    assert "HTTP 500" in stderr


# -- bench_workload: the open-loop generator --------------------------------------------


def test_bench_workload_prints_the_lateness_and_the_verdict() -> None:
    done = run_benchmark("bench_workload.py", "--runs", "1", "--duration", "1", timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    sent, answered, p50, p99, cpu = figures(
        rf"^median: sent {NUMBER}/s  answered {NUMBER}/s  lateness p50 {NUMBER} ms"
        rf"  p99 {NUMBER} ms  cpu {NUMBER} us/req$",
        out,
    )
    assert sent > 1000 and answered > 1000, "a second at 3,000/s offered"
    assert 0 <= p50 <= p99 and cpu > 0
    assert re.search(r"^run 1: .* errors 0  dropped \d+ ", out, re.MULTILINE), out
    assert re.search(r"^target \(>= 3,000/s sent, lateness p99 <= 5 ms\): (NOT )?MET$", out, re.M)


def test_bench_workload_refuses_500s(baseline_answering_500: str) -> None:
    done = run_benchmark(
        "bench_workload.py", "--runs", "1", "--duration", "0.5", "--rate", "100",
        "--url", f"node-1={baseline_answering_500}", timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert re.search(r"refused: run 1: \d+ errors \(error: HTTP 500 Internal Server Error: \d+\)",
                     done.stderr), done.stderr  # fmt: skip
    assert "median:" not in done.stdout and "MET" not in done.stdout


# -- bench_cluster: the embedded cluster's start-up -------------------------------------


@pytest.mark.slow
def test_bench_cluster_prints_start_and_stop_times() -> None:
    done = run_benchmark("bench_cluster.py", "--runs", "1", timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    median, low, high = figures(
        rf"^start -> ready: median {NUMBER} s, min {NUMBER} s, max {NUMBER} s$", out
    )
    assert 0 < low <= median <= high < 60
    assert figures(rf"^stop: median {NUMBER} s", out)[0] > 0
    assert re.search(r"^3 nodes, 1 runs \(after one warm-up run\)", out, re.MULTILINE), out


@pytest.mark.slow
def test_bench_cluster_starts_etcd_members_on_their_own_hosts() -> None:
    done = run_benchmark("bench_cluster.py", "--subject", "etcd", "--runs", "1", timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    median, low, high = figures(
        rf"^start -> ready: median {NUMBER} s, min {NUMBER} s, max {NUMBER} s$", out
    )
    assert 0 < low <= median <= high < 60
    assert re.search(r"^etcd: 3 nodes, 1 runs \(after one warm-up run\)", out, re.MULTILINE), out


def test_bench_cluster_refuses_a_cluster_that_does_not_start(tmp_path: Path) -> None:
    # a redis-server first on PATH that exits at once, as a broken install would
    fake = tmp_path / "redis-server"
    fake.write_text('#!/bin/sh\necho "redis-server: cannot start" >&2\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    path = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"
    done = run_benchmark("bench_cluster.py", "--runs", "1", timeout=60, env={"PATH": path})
    assert done.returncode == 1
    assert "refused: warm-up run: start() failed:" in done.stderr
    assert "redis exited with status 1" in done.stderr
    assert "start -> ready" not in done.stdout


# -- bench_scenarios: the suite's wall time and time to detect --------------------------


@pytest.mark.slow
def test_bench_scenarios_prints_wall_times_and_time_to_detect() -> None:
    done = run_benchmark(
        "bench_scenarios.py", "--trials", "1", "--runs", "1", "--workers", "2",
        "-k", "test_killed_node_is_detected", timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    serial = figures(rf"^suite wall time \(1 trial, incl\. pytest start\): {NUMBER} s", out)[0]
    parallel = figures(rf"^suite wall time \(1 trial, -n 2\): {NUMBER} s", out)[0]
    ratio = figures(rf"^serial / -n 2: {NUMBER}x$", out)[0]
    assert ratio == pytest.approx(serial / parallel, rel=0.05)
    assert figures(rf"^suite wall time \(1 trials\): {NUMBER} s$", out)[0] > 0
    ttd = figures(
        rf"^\| test_killed_node_is_detected_and_diagnosed_as_a_crash \| node_down@node-1 \|"
        rf" {NUMBER} s \| 1 \|$",
        out,
    )[0]
    assert 0 < ttd < 10
    ac1, ac3 = figures(rf"^\| causal \| 1 \| {NUMBER}% \| {NUMBER}% \|", out)
    assert 0 <= ac1 <= ac3 <= 100


def test_bench_scenarios_refuses_a_run_without_scenarios() -> None:
    done = run_benchmark(
        "bench_scenarios.py", "--trials", "1", "--workers", "1", "-k", "no_scenario_has_this_name",
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "refused: run 1, serial: pytest exited with 5" in done.stderr  # 5: none collected
    assert "suite wall time" not in done.stdout


# -- bench_checker: the linearizability checker, and Porcupine on the same histories ----


def _checker_figures(out: str, sizes: tuple[int, ...]) -> dict[str, object]:
    """The table's rows and the JSON line of a bench_checker run, checked against each other."""
    report: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    rows = report["sizes"]
    assert isinstance(rows, list) and [row["ops"] for row in rows] == list(sizes), report
    for row in rows:
        n = row["ops"]
        indeterminate, ours, ours_stale = figures(rf"^ *{n} +{NUMBER} +{NUMBER} +{NUMBER} ", out)
        assert indeterminate == row["indeterminate"] == round(0.05 * n)
        assert 0 < ours == pytest.approx(row["ours_s"], abs=1e-4)
        assert 0 < ours_stale == pytest.approx(row["ours_stale_s"], abs=1e-4)
        assert re.search(rf"^run 1 {n} ops \(\d+ indeterminate\): ours {NUMBER} s", out, re.M)
    assert re.search(r"^target \(10,000 ops .*\): not measured$", out, re.MULTILINE), out
    return report


def test_bench_checker_prints_the_medians() -> None:
    done = run_benchmark(
        "bench_checker.py", "--ops", "200,600", "--runs", "1", "--no-porcupine", timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = _checker_figures(done.stdout, (200, 600))
    assert report["porcupine"] is False and "porcupine: not run" in done.stdout


@pytest.fixture(scope="module")
def porcupine_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tools/porcupine-check built from the checkout (Go and the module proxy needed)."""
    import subprocess

    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed: bench_checker's Porcupine baseline needs it")
    binary = tmp_path_factory.mktemp("porcupine") / "porcupine-check"
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."], cwd=BENCHMARKS.parent / "tools" / "porcupine-check",
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return binary


def test_bench_checker_times_porcupine_on_the_same_histories(porcupine_check: Path) -> None:
    done = run_benchmark(
        "bench_checker.py", "--ops", "200,600", "--runs", "1", "--porcupine",
        str(porcupine_check), timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = _checker_figures(done.stdout, (200, 600))
    assert report["porcupine"] is True
    rows = report["sizes"]
    assert isinstance(rows, list)
    for row in rows:
        n = row["ops"]
        porcupine, ratio = figures(
            rf"^ *{n} +\d+ +{NUMBER} +{NUMBER} +{NUMBER} +\S+ +{NUMBER}x$", done.stdout
        )[2:]
        assert 0 < porcupine == pytest.approx(row["porcupine_s"], abs=1e-4)
        assert ratio == pytest.approx(row["ours_s"] / row["porcupine_s"], rel=0.06)


LENIENT_CHECKER = """
import dataclasses
import sys

sys.path.insert(0, {benchmarks!r})

import bench_checker
from pytest_operator._linearizable import check

# a checker that finds nothing: every history valid
bench_checker.check = lambda ops, *a, **kw: dataclasses.replace(
    check(ops, *a, **kw), valid=True, anomalies=()
)
raise SystemExit(bench_checker.main())
"""


def test_bench_checker_refuses_a_checker_that_misses_the_stale_read(tmp_path: Path) -> None:
    script = tmp_path / "lenient_checker.py"
    script.write_text(LENIENT_CHECKER.format(benchmarks=str(BENCHMARKS)))
    done = run_benchmark(str(script), "--ops", "200", "--runs", "1", "--no-porcupine", timeout=60)
    assert done.returncode == 1
    assert re.search(
        r"^refused: run 1, 200 ops: check\(\) judged valid a history with a stale read \(op \d+"
        r" on k\d returned '\d+', really ", done.stderr, re.MULTILINE
    ), done.stderr  # fmt: skip
    assert "no figures" in done.stdout and "medians" not in done.stdout


def test_bench_checker_refuses_a_porcupine_that_disagrees(tmp_path: Path) -> None:
    fake = tmp_path / "porcupine-check"  # says Ok to anything
    fake.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        """echo '{"ok": true, "result": "Ok", "elapsed_s": 0.001, "per_key": {}}'\n"""
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    done = run_benchmark(
        "bench_checker.py", "--ops", "200", "--runs", "1", "--porcupine", str(fake), timeout=60
    )
    assert done.returncode == 1
    assert "refused: run 1, 200 ops: Porcupine judged Ok a history with a stale read" in done.stderr
    assert "medians" not in done.stdout
