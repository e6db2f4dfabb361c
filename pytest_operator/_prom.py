"""Reading Prometheus text exposition between two scrapes: rates and quantiles.

Subjects that expose ``/metrics`` turn two consecutive scrapes into the generic
signals (request rate, error rate, latency p99) with these helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Scrape:
    at: float
    samples: dict[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
        return cls(at, samples)

    def value(self, name: str, **match: str) -> float | None:
        """The sum of ``name``'s series whose labels include ``match`` (None: no series)."""
        found = [
            v
            for (n, labels), v in self.samples.items()
            if n == name and all((k, val) in labels for k, val in match.items())
        ]
        return sum(found) if found else None

    def label_values(self, name: str, label: str) -> set[str]:
        found = (dict(labels) for (n, labels) in self.samples if n == name)
        return {labels[label] for labels in found if label in labels}


def delta(prev: Scrape | None, cur: Scrape, name: str, **match: str) -> float | None:
    """How much a counter grew between two scrapes (a reset counts from zero)."""
    now = cur.value(name, **match)
    if now is None:
        return None
    before = prev.value(name, **match) if prev is not None else None
    if before is None or now < before:  # first scrape, or the process restarted
        return now if prev is not None else None
    return now - before


def histogram_quantile(prev: Scrape | None, cur: Scrape, name: str, q: float) -> float | None:
    """The q-quantile of the observations made between two scrapes (linear within a bucket).

    ``name`` is the histogram's base name (``<name>_bucket`` series with ``le``);
    None when nothing was observed in between.
    """
    bucket = f"{name}_bucket"
    bounds: list[tuple[float, float]] = []
    for (n, labels), _ in cur.samples.items():
        if n != bucket:
            continue
        le = dict(labels).get("le")
        if le is None:
            continue
        grew = delta(prev, cur, bucket, le=le)
        if grew is None:
            return None
        bounds.append((math.inf if le == "+Inf" else float(le), grew))
    if not bounds:
        return None
    bounds.sort()
    total = bounds[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if math.isinf(upper):
                return lower_bound
            if count == lower_count:
                return upper
            share = (rank - lower_count) / (count - lower_count)
            return lower_bound + (upper - lower_bound) * share
        lower_bound, lower_count = upper, count
    return bounds[-1][0]
