"""The causal engine on real cases of a Raft cluster (etcd 3.4, the etcd subject's scenarios).

``3n-*``: one run of the scenario suite on 3 members; the expected causes are the faults
the scenarios injected, as the run's accuracy summary recorded them. ``5n-*``: an earlier
run on 5 members; its summary was not kept, so each expected cause is the scenario's
fault at the member the timeline shows it hit (the only member that stopped answering;
for the isolation, the member that led and then alone lost quorum). ``*-variant-*``: runs
of variants the scenarios do not have (see the comment in EXPECTED).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_operator._causal import CausalEngine
from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._consensus import mesh_of
from pytest_operator._prompt import build_prompt
from pytest_operator._serde import case_from_json, case_to_json

CASES = Path(__file__).parent / "etcd-cases"

EXPECTED: dict[str, RootCause | None] = {
    "3n-control": None,
    "3n-follower_kill": RootCause(FaultKind.CRASH, "etcd-2"),
    "3n-follower_pause": RootCause(FaultKind.PAUSE, "etcd-2"),
    "3n-leader_isolation": RootCause(FaultKind.ISOLATION, "etcd-1"),
    "3n-leader_kill": RootCause(FaultKind.CRASH, "etcd-2"),
    "3n-leader_pause": RootCause(FaultKind.PAUSE, "etcd-3"),
    # three members: the minority is one follower, so split_minority() is its isolation
    "3n-minority_partition": RootCause(FaultKind.ISOLATION, "etcd-1"),
    "3n-quorum_loss": RootCause(FaultKind.SPLIT, "etcd-1|etcd-2|etcd-3"),
    "5n-control": None,
    "5n-follower_kill": RootCause(FaultKind.CRASH, "etcd-2"),
    "5n-follower_pause": RootCause(FaultKind.PAUSE, "etcd-2"),
    "5n-leader_isolation": RootCause(FaultKind.ISOLATION, "etcd-1"),
    # variants never tuned for (other members, a pair, explicit groups, 50/500 ms timings),
    # each run once; the expected causes as that run's accuracy summary recorded them
    "3n-variant-explicit_groups": RootCause(FaultKind.ISOLATION, "etcd-1"),
    "5n-variant-isolated_follower": RootCause(FaultKind.ISOLATION, "etcd-1"),
    "5n-variant-pair_cut": RootCause(FaultKind.PARTITION, "etcd-1", "etcd-2"),
    "5n-variant-second_follower_paused": RootCause(FaultKind.PAUSE, "etcd-3"),
    "5n-variant-fast_timings_leader_kill": RootCause(FaultKind.CRASH, "etcd-1"),
    "5n-variant-fast_timings_leader_isolation": RootCause(FaultKind.ISOLATION, "etcd-5"),
}


def test_every_case_has_an_expectation() -> None:
    assert {p.stem for p in CASES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_consensus_case_is_ranked_first(name: str) -> None:
    case = case_from_json((CASES / f"{name}.json").read_text())
    members = 3 if name.startswith("3n") else 5
    assert len(mesh_of(case.topology)) == members
    d = CausalEngine().diagnose_now(case)
    expected = EXPECTED[name]
    if expected is None:
        assert not case.violations
        assert d.hypotheses == (), f"a control was diagnosed: {d.top_causes()}"
        return
    assert d.rank_of(expected) == 1, f"expected {expected}; got {d.top_causes(5)}"
    assert d.top is not None and d.top.evidence_for
    second = d.hypotheses[1].score if len(d.hypotheses) > 1 else 0.0
    assert d.top.score >= second + 2, f"a narrow lead: {d.top_causes(3)}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_consensus_case_round_trips_and_fits_the_prompt(name: str) -> None:
    text = (CASES / f"{name}.json").read_text().strip()
    case = case_from_json(text)
    assert case_to_json(case) == text
    assert build_prompt(case).size < 24_000
