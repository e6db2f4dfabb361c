"""The causal engine on real cases of faults on the clients' links and of two faults at
once, captured from the scenario suite and from variants run once, untuned, on 5 nodes
(``5n-*``: other nodes, other links, other timings than the suite's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_operator._causal import CausalEngine
from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._serde import case_from_json

CASES = Path(__file__).parent / "link-cases"

P, L = FaultKind.PARTITION, FaultKind.LATENCY

EXPECTED: dict[str, tuple[RootCause, ...]] = {
    "blackhole-client-node-2": (RootCause(P, "client", "node-2"),),
    "compose-latency-node-1-redis-partition-client-node-3": (
        RootCause(L, "node-1", "redis"),
        RootCause(P, "client", "node-3"),
    ),
    "5n-blackhole-client-node-4": (RootCause(P, "client", "node-4"),),
    "5n-latency-client-node-1": (RootCause(L, "client", "node-1"),),
    "5n-reset-peer-node-3-redis": (RootCause(P, "node-3", "redis"),),
    "5n-compose-kill-node-2-latency-client-node-1": (
        RootCause(FaultKind.CRASH, "node-2"),
        RootCause(L, "client", "node-1"),
    ),
    "5n-compose-partition-node-1-redis-partition-client-node-2": (
        RootCause(P, "node-1", "redis"),
        RootCause(P, "client", "node-2"),
    ),
    "5n-compose-blackhole-client-node-5-pause-node-1": (
        RootCause(P, "client", "node-5"),
        RootCause(FaultKind.PAUSE, "node-1"),
    ),
}


def test_every_case_has_an_expectation() -> None:
    assert {p.stem for p in CASES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_injected_cause_ranks_within_the_number_of_faults(name: str) -> None:
    case = case_from_json((CASES / f"{name}.json").read_text())
    d = CausalEngine().diagnose_now(case)
    causes = EXPECTED[name]
    ranks = [d.rank_of(c) for c in causes]
    assert all(r is not None and r <= len(causes) for r in ranks), (
        f"expected {', '.join(map(str, causes))} in the top {len(causes)}; got {d.top_causes()}"
    )


def test_a_cut_client_link_is_not_the_node_itself() -> None:
    """The node answered the monitor throughout: neither a crash nor a pause of it ranks."""
    case = case_from_json((CASES / "blackhole-client-node-2.json").read_text())
    d = CausalEngine().diagnose_now(case)
    for kind in (FaultKind.CRASH, FaultKind.PAUSE):
        assert d.rank_of(RootCause(kind, "node-2")) is None
    assert d.top is not None
    assert any("answered the monitor" in e.text for e in d.top.evidence_for)


def test_a_slow_node_is_not_blamed_on_the_clients_link_to_it() -> None:
    """Latency on node-1 -> redis slows what clients see from node-1 too; node-1's own
    decision latency accounts for it, so the clients' link is not the answer."""
    case = case_from_json(
        (CASES / "compose-latency-node-1-redis-partition-client-node-3.json").read_text()
    )
    d = CausalEngine().diagnose_now(case)
    link = d.rank_of(RootCause(L, "client", "node-1"))
    slow = d.rank_of(RootCause(L, "node-1", "redis"))
    assert slow is not None
    assert link is None or link > slow
