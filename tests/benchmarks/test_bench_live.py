"""A short run of benchmarks/bench_live.py (the live view's cost to the monitor), so the
figures the README quotes cannot silently break; and a run with errors refused."""

from __future__ import annotations

import re

import pytest

from tests.benchmarks.conftest import run_benchmark

NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


@pytest.mark.slow
def test_bench_live_prints_both_modes_and_the_ratios() -> None:
    done = run_benchmark(
        "bench_live.py", "--runs", "1", "--steady", "1", "--warmup", "0.5", timeout=240
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for mode in ("without", "with"):
        found = re.search(rf"^{mode} +{NUMBER} +{NUMBER} +{NUMBER} +(\d+)$", out, re.MULTILINE)
        assert found, out
        ttd, tick, p99, ticks = (float(g) for g in found.groups())
        assert 0 < ttd < 15, f"{mode}: time to detect {ttd} s"
        assert 0 < tick <= p99, f"{mode}: tick {tick} ms, p99 {p99} ms"
        assert ticks >= 4  # a second of steady ticks at 0.25 s, then the detection's
        assert re.search(rf"^run 1 {mode} +ttd [0-9.]+ s ticks \d+ ", out, re.MULTILINE), out
    found = re.search(rf"^ratio +{NUMBER}x +{NUMBER}x +{NUMBER}x$", out, re.MULTILINE)
    assert found, out
    assert all(float(g) > 0 for g in found.groups())
    found = re.search(rf"^per-run +{NUMBER}x +{NUMBER}x$", out, re.MULTILINE)
    assert found, out
    assert all(float(g) > 0 for g in found.groups())


@pytest.mark.slow
def test_bench_live_refuses_a_run_that_detects_nothing() -> None:
    """A killed node never skews a clock: the invariant awaited is not confirmed, so the
    run is refused (exit 1, no figures)."""
    done = run_benchmark(
        "bench_live.py", "--runs", "1", "--steady", "0.5", "--warmup", "0.5",
        "--invariant", "clock_skew", "--timeout", "2", timeout=240,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert "refused: without: clock_skew@node-1 not confirmed within 2.0 s" in done.stderr
    assert "ratio" not in done.stdout
