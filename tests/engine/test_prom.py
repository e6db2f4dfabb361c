"""Prometheus text between two scrapes: counter deltas and histogram quantiles."""

from __future__ import annotations

import pytest

from pytest_operator._prom import Scrape, delta, histogram_quantile

BEFORE = """
# TYPE req counter
req_total{decision="allowed"} 10
req_total{decision="denied"} 5
# TYPE lat histogram
lat_bucket{le="0.01"} 10
lat_bucket{le="0.1"} 10
lat_bucket{le="+Inf"} 10
lat_count 10
lat_sum 0.05
"""

AFTER = """
# TYPE req counter
req_total{decision="allowed"} 40
req_total{decision="denied"} 25
# TYPE lat histogram
lat_bucket{le="0.01"} 10
lat_bucket{le="0.1"} 100
lat_bucket{le="+Inf"} 110
lat_count 110
lat_sum 9.0
"""


def test_counter_deltas_by_label_and_in_total() -> None:
    a, b = Scrape.parse(BEFORE, 1.0), Scrape.parse(AFTER, 2.0)
    assert delta(a, b, "req_total") == 50
    assert delta(a, b, "req_total", decision="denied") == 20
    assert delta(None, b, "req_total") is None  # no baseline yet
    assert delta(a, b, "missing_total") is None
    assert b.label_values("req_total", "decision") == {"allowed", "denied"}


def test_a_restarted_process_counts_from_zero() -> None:
    a, b = Scrape.parse(AFTER, 1.0), Scrape.parse(BEFORE, 2.0)
    assert delta(a, b, "req_total") == 15


def test_quantiles_of_what_happened_between_scrapes() -> None:
    a, b = Scrape.parse(BEFORE, 1.0), Scrape.parse(AFTER, 2.0)
    # 100 new observations: 90 in (0.01, 0.1], 10 above 0.1
    assert histogram_quantile(a, b, "lat", 0.5) == pytest.approx(0.01 + 0.09 * 50 / 90)
    assert histogram_quantile(a, b, "lat", 0.99) == pytest.approx(0.1)  # +Inf: the lower bound
    assert histogram_quantile(b, b, "lat", 0.99) is None  # nothing observed in between
