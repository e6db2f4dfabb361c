"""The rate limiter's invariants, as checks over one generic observation."""

from __future__ import annotations

from pytest_operator._cluster import CLIENT
from pytest_operator._invariants import Category, Finding, Invariant
from pytest_operator._signals import Observation

REDIS = "redis"


def _nodes(obs: Observation) -> list[str]:
    return [c.component for c in obs.components if c.component != REDIS]


def node_down(obs: Observation) -> list[Finding]:
    return [
        Finding(c.component, f"does not answer its health probe ({c.probe_failure or 'error'})")
        for c in obs.components
        if c.component != REDIS and not c.reachable
    ]


def redis_disconnected(obs: Observation) -> list[Finding]:
    out = []
    for name in _nodes(obs):
        c = obs.component(name)
        link = obs.link(name, REDIS)
        if c is None or not c.reachable:
            continue
        if c.ready is False or (link is not None and link.up is False):
            out.append(Finding(name, "cannot reach Redis (not ready)"))
    return out


def _high_latency(threshold_ms: float) -> Invariant:
    def check(obs: Observation) -> list[Finding]:
        return [
            Finding(
                c.component,
                f"check p99 {c.latency_p99_ms:.0f} ms > {threshold_ms:.0f} ms",
                c.latency_p99_ms,
            )
            for c in obs.components
            if c.component != REDIS
            and c.latency_p99_ms is not None
            and c.latency_p99_ms > threshold_ms
        ]

    return Invariant(
        "high_latency",
        Category.LATENCY,
        check,
        description=f"a node's decision latency p99 stays under {threshold_ms:.0f} ms",
        grace=1.0,
        threshold=threshold_ms,
    )


def _slow_for_clients(threshold_ms: float) -> Invariant:
    def check(obs: Observation) -> list[Finding]:
        return [
            Finding(
                link.target,
                f"clients saw p99 {link.latency_p99_ms:.0f} ms > {threshold_ms:.0f} ms",
                link.latency_p99_ms,
            )
            for link in obs.links
            if link.source == CLIENT
            and link.latency_p99_ms is not None
            and link.latency_p99_ms > threshold_ms
        ]

    return Invariant(
        "slow_for_clients",
        Category.LATENCY,
        check,
        description=f"the p99 latency clients see from each node stays under"
        f" {threshold_ms:.0f} ms (judged from the client history)",
        grace=1.0,
        threshold=threshold_ms,
    )


def _counter_drift(tolerance: float) -> Invariant:
    def check(obs: Observation) -> list[Finding]:
        out = []
        for d in obs.divergences:
            if abs(d.delta) > tolerance:
                out.append(
                    Finding(
                        d.component,
                        f"its view of a counter is {d.view:g}, Redis says {d.truth:g}",
                        d.delta,
                    )
                )
        return out

    return Invariant(
        "counter_drift",
        Category.CONSISTENCY,
        check,
        description="every node's view of a counter agrees with Redis",
        grace=0.5,
        threshold=tolerance,
    )


def ghost_allowing(obs: Observation) -> list[Finding]:
    out = []
    for v in obs.safety:
        for component in v.components:
            out.append(Finding(component, v.detail, v.observed))
    return out


def _request_errors(threshold: float) -> Invariant:
    def check(obs: Observation) -> list[Finding]:
        return [
            Finding(c.component, f"{c.error_rate:.0%} of checks failed", c.error_rate)
            for c in obs.components
            if c.error_rate is not None and c.error_rate > threshold
        ]

    return Invariant(
        "request_errors",
        Category.AVAILABILITY,
        check,
        description=f"at most {threshold:.0%} of a node's checks fail",
        grace=0.5,
        threshold=threshold,
    )


def _clock_skew(threshold_ms: float) -> Invariant:
    def check(obs: Observation) -> list[Finding]:
        return [
            Finding(
                c.component, f"clock off by {c.clock_offset_ms / 1000:+.1f} s", c.clock_offset_ms
            )
            for c in obs.components
            if c.clock_offset_ms is not None and abs(c.clock_offset_ms) > threshold_ms
        ]

    return Invariant(
        "clock_skew",
        Category.CONSISTENCY,
        check,
        description=f"every node's clock is within {threshold_ms / 1000:g} s of the monitor's",
        grace=0.5,
        threshold=threshold_ms,
    )


def invariants(
    *, latency_ms: float = 100.0, client_latency_ms: float = 500.0, drift: float = 5.0
) -> tuple[Invariant, ...]:
    return (
        Invariant(
            "node_down",
            Category.AVAILABILITY,
            node_down,
            description="every node answers its health probe",
            grace=0.25,
        ),
        Invariant(
            "redis_disconnected",
            Category.AVAILABILITY,
            redis_disconnected,
            description="every node reaches Redis",
            grace=0.25,
        ),
        _high_latency(latency_ms),
        _slow_for_clients(client_latency_ms),
        _counter_drift(drift),
        Invariant(
            "ghost_allowing",
            Category.SAFETY,
            ghost_allowing,
            description="no window of a limit's length admits more than the limit"
            " (judged from the client history)",
        ),
        _request_errors(0.05),
        _clock_skew(1000.0),
    )
