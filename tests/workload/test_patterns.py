"""Arrival schedules and key choosers: pure, no loop."""

from __future__ import annotations

import collections
import itertools

import pytest

from pytest_operator._workload import (
    boundary_burst,
    burst,
    hot,
    ramp,
    steady,
    uniform,
    zipf,
)

START = 1_700_000_000.123  # an epoch start time; only boundary_burst looks at it


def test_steady_is_evenly_spaced_and_counts_rate_times_duration() -> None:
    offsets = list(steady(200, duration=2.0).offsets(START))
    assert len(offsets) == 400
    assert offsets[0] == 0.0
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(offsets)}
    assert gaps == {0.005}
    assert offsets[-1] < 2.0


def test_open_ended_steady_goes_on() -> None:
    offsets = list(itertools.islice(steady(10).offsets(START), 1000))
    assert offsets[-1] == pytest.approx(99.9)


def test_ramp_rate_rises_linearly() -> None:
    offsets = list(ramp(100, 300, duration=2.0).offsets(START))
    assert len(offsets) == pytest.approx(400, abs=1)  # (100 + 300) / 2 * 2 s
    first_second = sum(1 for t in offsets if t < 1.0)
    assert first_second == pytest.approx(150, abs=1)  # integral of 100 + 100 t over [0, 1)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert gaps[0] == pytest.approx(1 / 100, rel=0.02)
    assert gaps[-1] == pytest.approx(1 / 300, rel=0.02)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(gaps))


def test_falling_and_flat_ramps() -> None:
    falling = list(ramp(300, 100, duration=2.0).offsets(START))
    assert len(falling) == pytest.approx(400, abs=1)
    assert falling == sorted(falling)
    assert len(list(ramp(50, 50, duration=2.0).offsets(START))) == 100
    assert list(ramp(0, 0, duration=2.0).offsets(START)) == []


def test_burst_switches_rate_for_its_length() -> None:
    offsets = list(burst(10, 1000, at=1.0, length=0.5, duration=3.0).offsets(START))
    before = [t for t in offsets if t < 1.0]
    during = [t for t in offsets if 1.0 <= t < 1.5]
    after = [t for t in offsets if t >= 1.5]
    assert (len(before), len(during), len(after)) == (10, 500, 15)
    assert offsets == sorted(offsets) and offsets[-1] < 3.0
    # Without a duration, the base rate goes on after the burst.
    open_ended = list(itertools.islice(burst(10, 1000, at=1.0, length=0.5).offsets(START), 600))
    assert open_ended[-1] > 3.0


def test_boundary_burst_straddles_window_edges_of_the_epoch_clock() -> None:
    pattern = boundary_burst(window_ms=1000, count=20, spread_ms=50, edges=2)
    edges = pattern.edge_times(START)
    assert len(edges) == 2
    for edge in edges:
        assert round(edge * 1000) % 1000 == 0  # floor(now_ms / window_ms) * window_ms
    assert edges[1] - edges[0] == pytest.approx(1.0)
    assert edges[0] - 0.050 >= START + 0.050  # the first burst starts after the lead
    arrivals = [START + t for t in pattern.offsets(START)]
    assert len(arrivals) == 40
    for edge in edges:
        near = [a for a in arrivals if abs(a - edge) <= 0.050 + 1e-9]
        assert sum(1 for a in near if a < edge) == 10
        assert sum(1 for a in near if a >= edge) == 10
    assert arrivals == sorted(arrivals)


def test_boundary_burst_with_background_and_odd_windows() -> None:
    start = 1_700_000_000.0
    pattern = boundary_burst(window_ms=300, count=7, spread_ms=30, base_rate=100)
    (edge,) = pattern.edge_times(start)
    assert round(edge * 1000) % 300 == 0
    offsets = list(pattern.offsets(start))
    burst_part = [t for t in offsets if abs(start + t - edge) <= 0.030]
    assert len(burst_part) >= 7  # the burst, plus any background arrivals in the span
    assert len(offsets) > 7  # the background
    assert offsets == sorted(offsets)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: steady(-1), "steady rate must be a finite rate >= 0 requests/s, got -1"),
        (lambda: steady(10, 0), "steady duration must be a finite number of seconds > 0, got 0"),
        (lambda: ramp(1, 2, -3), "ramp duration must be a finite number of seconds > 0, got -3"),
        (lambda: burst(1, 2, -1, 1), "burst at must be >= 0 seconds, got -1"),
        (
            lambda: boundary_burst(1000, 10, 600),
            "boundary_burst spread_ms must be in (0, window_ms / 2], got 600",
        ),
        (lambda: boundary_burst(0, 10, 5), "boundary_burst window_ms must be > 0, got 0"),
        (lambda: boundary_burst(100, 1, 5), "boundary_burst count must be >= 2, got 1"),
        (lambda: zipf(0), "zipf n must be >= 1, got 0"),
        (lambda: uniform([]), "uniform needs at least one key"),
    ],
)
def test_bad_patterns_are_refused_with_the_reason(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


def test_hot_key() -> None:
    assert set(itertools.islice(hot("k1").stream(), 100)) == {"k1"}


def test_uniform_keys_are_seeded_and_cover_the_set() -> None:
    chooser = uniform(10, seed=7)
    first = list(itertools.islice(chooser.stream(), 5000))
    assert first == list(itertools.islice(chooser.stream(), 5000))  # same seed, same keys
    counts = collections.Counter(first)
    assert set(counts) == {f"key-{i}" for i in range(10)}
    assert min(counts.values()) > 400 and max(counts.values()) < 600
    other = list(itertools.islice(uniform(10, seed=8).stream(), 5000))
    assert other != first
    assert set(itertools.islice(uniform(["a", "b"]).stream(), 100)) == {"a", "b"}


def test_zipf_keys_are_skewed_by_rank() -> None:
    keys = list(itertools.islice(zipf(100, s=1.1, seed=3).stream(), 20000))
    counts = collections.Counter(keys)
    # Weight of rank i is 1 / i^1.1: key-0 twice-and-a-bit as often as key-1.
    assert counts["key-0"] / counts["key-1"] == pytest.approx(2**1.1, rel=0.15)
    assert counts["key-0"] > counts["key-9"] * 8
    assert keys == list(itertools.islice(zipf(100, s=1.1, seed=3).stream(), 20000))
    harmonic = sum(1 / (i + 1) ** 1.1 for i in range(100))
    assert counts["key-0"] / 20000 == pytest.approx(1 / harmonic, rel=0.1)
