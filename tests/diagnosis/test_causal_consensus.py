"""The causal engine on consensus groups: crash, pause, isolation, splits and a pair cut,
on synthetic timelines of a Raft group (see tests/diagnosis/raft.py for what they show)."""

from __future__ import annotations

import pytest

from pytest_operator._causal import CausalEngine
from pytest_operator._causes import FaultKind, RootCause, split_cause
from pytest_operator._consensus import LINK_REPORT_LAG_S, MeshView, has_quorum, mesh_of
from pytest_operator._diagnosis import Case, Diagnosis
from pytest_operator._invariants import Category, Violation
from pytest_operator._serde import case_from_json, case_to_json
from pytest_operator._signals import ComponentSignals, Role
from pytest_operator._topology import Component, ComponentKind, Link, Topology
from tests.diagnosis.raft import T0, Raft, names, topology, variant


def diagnose(case: Case) -> Diagnosis:
    return CausalEngine().diagnose_now(case)


def assert_first(case: Case, expected: RootCause) -> Diagnosis:
    d = diagnose(case)
    assert d.rank_of(expected) == 1, f"expected {expected}; got {d.top_causes(5)}"
    assert d.top is not None and d.top.evidence_for
    second = d.hypotheses[1].score if len(d.hypotheses) > 1 else 0.0
    assert d.top.score > second, f"a tie at the top: {d.top_causes(5)}"
    return d


LONG = LINK_REPORT_LAG_S + 1.0
"""Seconds a run goes on after its first violation when the links must tell."""
C, P, ISO, S = FaultKind.CRASH, FaultKind.PAUSE, FaultKind.ISOLATION, FaultKind.SPLIT
SCENARIOS: dict[str, tuple[Raft, RootCause]] = {}
for n in (3, 5):
    last = f"db-{n}"
    SCENARIOS |= {
        f"{n}-crash-leader": (Raft(n, "crash", ("db-1",)), RootCause(C, "db-1")),
        f"{n}-crash-follower": (Raft(n, "crash", (last,)), RootCause(C, last)),
        f"{n}-pause-leader": (Raft(n, "pause", ("db-1",)), RootCause(P, "db-1")),
        f"{n}-pause-follower": (Raft(n, "pause", (last,)), RootCause(P, last)),
        f"{n}-isolate-leader": (Raft(n, "isolate", ("db-1",)), RootCause(ISO, "db-1")),
        f"{n}-isolate-follower": (Raft(n, "isolate", (last,)), RootCause(ISO, last)),
        # a pair cut looks like its follower's isolation until every other link has had
        # the time to be reported down: these runs watch that long
        f"{n}-cut-pair-with-leader": (
            Raft(n, "cut", ("db-1", "db-2"), until="peer_link_down", settle=LONG),
            RootCause(FaultKind.PARTITION, "db-1", "db-2"),
        ),
        f"{n}-cut-pair-of-followers": (
            Raft(n, "cut", ("db-2", last), until="peer_link_down", settle=LONG),
            RootCause(FaultKind.PARTITION, "db-2", last),
        ),
    }
MINORITY = (("db-1", "db-2", "db-3"), ("db-4", "db-5"))
SCENARIOS |= {
    "5-split-minority": (Raft(5, "split", groups=MINORITY), split_cause(MINORITY, names(5))),
    "3-split-no-quorum": (
        Raft(3, "split", groups=(("db-1",), ("db-2",), ("db-3",))),
        RootCause(S, "db-1|db-2|db-3"),
    ),
    # five members in 2|2|1: only the link reports (which lag) tell the groups apart,
    # so the run watches until they have caught up
    "5-split-no-quorum": (
        Raft(5, "split", groups=(("db-1", "db-2"), ("db-3", "db-4"), ("db-5",)), settle=LONG),
        RootCause(S, "db-1+db-2|db-3+db-4|db-5"),
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_injected_cause_ranks_first(name: str) -> None:
    raft, expected = SCENARIOS[name]
    case = raft.case()
    assert case.violations, "the fault broke an invariant"
    assert_first(case, expected)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_injected_cause_ranks_first_when_the_monitor_saw_the_fault_begin(name: str) -> None:
    """Injected 1 s into the run (``async with chaos...`` after the monitor started)."""
    raft, expected = SCENARIOS[name]
    case = variant(raft, fault_at=1.0).case()
    assert case.observations[0].component("db-1") == Raft(raft.n).observe(0.0).components[0]
    assert_first(case, expected)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_injected_cause_ranks_first_once_the_link_reports_caught_up(name: str) -> None:
    """A longer run: every cut shows in the link reports too."""
    raft, expected = SCENARIOS[name]
    case = variant(raft, settle=7.0).case()
    assert case.observations[-1].at - T0 > raft.link_lag
    assert_first(case, expected)


VARIANTS: dict[str, dict[str, object]] = {
    "late-step-down": {"step_down": 2.0},
    "slow-link-reports": {"fast_links": False},
    "no-quorum-field": {"report_quorum": False},
    "probe-blip-on-db-2": {"blip": "db-2"},
    "slow-settle": {"settle": 2.5},
}


@pytest.mark.parametrize("which", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_injected_cause_ranks_first_in_variants(name: str, which: str) -> None:
    """A leader cut off that steps down only after two election timeouts (after the run
    ended), every link report as slow as a stream timeout, members that do not say
    whether they can commit, a probe lost to load, a longer run."""
    raft, expected = SCENARIOS[name]
    assert_first(variant(raft, **VARIANTS[which]).case(), expected)


@pytest.mark.parametrize(
    "name", [n for n in sorted(SCENARIOS) if "cut-pair" not in n and n != "5-split-no-quorum"]
)
def test_without_mesh_link_reports_the_views_suffice(name: str) -> None:
    """Members that report no links to one another: leader and quorum views alone."""
    raft, expected = SCENARIOS[name]
    assert_first(variant(raft, mesh_links=False).case(), expected)


@pytest.mark.parametrize("n", [3, 5])
def test_a_healthy_control_gets_no_hypothesis(n: int) -> None:
    case = Raft(n, "none", timeout=3.0).case()
    assert len(case.observations) == 13 and not case.violations
    assert diagnose(case).hypotheses == ()


@pytest.mark.parametrize("n", [3, 5])
def test_a_healthy_control_with_a_stray_violation_is_not_a_consensus_fault(n: int) -> None:
    """A violation the signals do not support draws no consensus cause."""
    case = Raft(n, "none", timeout=3.0).case()
    stray = Violation("slow_reads", Category.LATENCY, "db-2", "p99 over 50 ms", T0 + 1, T0 + 1.5)
    d = diagnose(Case(case.topology, case.observations, (stray,)))
    kinds = {h.cause.kind for h in d.hypotheses}
    assert not kinds & {C, P, ISO, S, FaultKind.PARTITION}, d.top_causes(5)


def test_isolated_leader_evidence_names_the_step_down_and_the_new_leader() -> None:
    d = assert_first(Raft(3, "isolate", ("db-1",)).case(), RootCause(ISO, "db-1"))
    assert d.top is not None
    texts = [e.text for e in d.top.evidence_for]
    assert "db-1 lost quorum (no leader, or cannot commit) while it answered the monitor" in texts
    assert "the others kept quorum under db-2" in texts
    assert "db-1 led; the others elected db-2" in texts
    # the leader and its followers talk every heartbeat: their links show the cut at once
    assert "every mesh link to and from db-1 failed (4)" in texts


def test_an_isolated_follower_is_found_before_its_links_to_the_others_are_reported() -> None:
    """Only its links to the leader are down yet (the other followers' links to it are still
    reported up): its lone campaign, its term past everyone's, tells it is cut off."""
    case = Raft(5, "isolate", ("db-5",)).case()
    mv = MeshView(case)
    assert mv.cut == {("db-1", "db-5"), ("db-5", "db-1")} and not mv.settled()
    d = assert_first(case, RootCause(ISO, "db-5"))
    assert d.top is not None
    texts = [e.text for e in d.top.evidence_for]
    assert any(t.startswith("db-5's term rose to") for t in texts), texts
    assert [e.text for e in d.top.evidence_against] == [
        "its links to db-2, db-3, db-4 were still reported up (such reports can lag a cut)"
    ]


def test_an_isolated_leader_that_has_not_stepped_down_yet_is_still_found() -> None:
    """The run ends before CheckQuorum: it still says it leads, with quorum by its own
    word, but the others follow a leader they elected at a higher term."""
    case = Raft(3, "isolate", ("db-1",), step_down=2.0).case()
    last = case.observations[-1].component("db-1")
    assert last is not None and last.role is Role.LEADER and last.quorum is True
    d = assert_first(case, RootCause(ISO, "db-1"))
    assert d.top is not None
    texts = [e.text for e in d.top.evidence_for]
    assert "db-1 still claims to lead at term 5 while the others follow db-2 at term 6" in texts


def test_isolation_with_link_reports_cites_every_link_and_outranks_partitions() -> None:
    case = Raft(5, "isolate", ("db-3",), settle=7.0).case()
    d = assert_first(case, RootCause(ISO, "db-3"))
    assert d.top is not None
    assert "every mesh link to and from db-3 failed (8)" in [e.text for e in d.top.evidence_for]
    partitions = [h for h in d.hypotheses if h.cause.kind is FaultKind.PARTITION]
    assert all(h.score < d.top.score - 3 for h in partitions), d.top_causes(5)


def test_crashed_leader_is_credited_with_the_election() -> None:
    d = assert_first(Raft(3, "crash", ("db-1",), settle=2.0).case(), RootCause(C, "db-1"))
    assert d.top is not None
    texts = [e.text for e in d.top.evidence_for]
    assert "db-1 led; the others elected db-2 (term 5 -> 6)" in texts
    isolation = [h for h in d.hypotheses if h.cause.kind is ISO]
    assert not isolation, "a member that stopped answering is not isolated"


def test_a_pair_cut_is_one_partition_not_two() -> None:
    case = Raft(3, "cut", ("db-1", "db-2"), until="peer_link_down", settle=LONG).case()
    assert MeshView(case).settled()
    d = assert_first(case, RootCause(FaultKind.PARTITION, "db-2", "db-1"))
    pair = [h for h in d.hypotheses if {h.cause.component, h.cause.peer} == {"db-1", "db-2"}]
    assert len(pair) == 1, "its two directions are one cause"
    assert d.top is not None
    texts = {e.text for e in d.top.evidence_for}
    assert {
        "every other mesh link stayed up: only db-1 and db-2 were cut apart",
        "every other mesh link stayed up: only db-2 and db-1 were cut apart",
    } & texts, texts


def test_minority_split_names_both_groups_whatever_their_order() -> None:
    d = assert_first(
        Raft(5, "split", groups=MINORITY).case(), RootCause(S, "db-5+db-4|db-3+db-2+db-1")
    )
    assert d.top is not None and d.top.cause == RootCause(S, "db-1+db-2+db-3|db-4+db-5")


def test_names_are_only_labels() -> None:
    """Rename every member: the answer follows the renaming."""
    text = case_to_json(Raft(5, "split", groups=MINORITY).case())
    renamed = case_from_json(text.replace('"db-', '"peer-').replace("client_db-", "client_peer-"))
    d = diagnose(renamed)
    assert d.top is not None and d.top.cause == RootCause(S, "peer-1+peer-2+peer-3|peer-4+peer-5")


def test_synthetic_cases_round_trip_through_json() -> None:
    case = Raft(3, "isolate", ("db-1",)).case()
    assert case_from_json(case_to_json(case)) == case
    assert '"quorum": true' in case_to_json(case)


# --- the features, one by one ------------------------------------------------------


def test_mesh_is_the_components_linked_both_ways_not_the_clients() -> None:
    topo = topology(names(3))
    assert mesh_of(topo) == ("db-1", "db-2", "db-3")
    one_way = Topology(
        (Component("a", ComponentKind.SERVICE), Component("s", ComponentKind.DATASTORE)),
        (Link("a", "s", "p"),),
    )
    assert mesh_of(one_way) == ()


def test_has_quorum_reads_the_members_word_then_readiness() -> None:
    assert has_quorum(ComponentSignals("a", True, role=Role.FOLLOWER, leader="b", quorum=True))
    assert has_quorum(ComponentSignals("a", True, role=Role.CANDIDATE, quorum=True)) is False
    assert has_quorum(ComponentSignals("a", True, term=3, leader="b", quorum=False)) is False
    assert has_quorum(ComponentSignals("a", True, ready=False)) is False
    assert has_quorum(ComponentSignals("a", True)) is None
    assert has_quorum(ComponentSignals("a", False, role=Role.LEADER, quorum=True)) is None


def test_mesh_view_of_an_isolated_leader() -> None:
    mv = MeshView(Raft(3, "isolate", ("db-1",), settle=7.0).case())
    assert mv.answering() == ["db-1", "db-2", "db-3"] and mv.silent() == []
    assert mv.lost() == ["db-1"] and mv.kept() == ["db-2", "db-3"]
    old, new, _ = mv.elected() or ("", "", 0.0)
    assert (old, new) == ("db-1", "db-2")
    assert mv.groups() == [["db-1"], ["db-2", "db-3"]]
    assert mv.cut == {("db-1", "db-2"), ("db-1", "db-3"), ("db-2", "db-1"), ("db-3", "db-1")}
    rise = mv.term_rise(["db-1"])
    assert rise is not None and rise[1] > 6


def test_mesh_view_of_a_paused_follower() -> None:
    mv = MeshView(Raft(5, "pause", ("db-5",), settle=7.0).case())
    assert mv.silent() == ["db-5"]
    assert mv.lost() == [] and mv.elected() is None
    assert mv.groups() == [["db-1", "db-2", "db-3", "db-4"]]  # the silent one is left out


def test_the_captured_cases_have_no_mesh() -> None:
    """The rate limiter's real cases: nodes call the store one way, so no consensus
    hypothesis can arise there (and their diagnoses are as before, test_causal.py)."""
    from pathlib import Path

    folder = Path(__file__).parent
    files = [p for p in folder.rglob("*.json") if not {"responses", "etcd-cases"} & set(p.parts)]
    assert len(files) > 50
    for path in files:
        case = case_from_json(path.read_text())
        assert mesh_of(case.topology) == (), path
        hypotheses = diagnose(case).hypotheses
        assert not {h.cause.kind for h in hypotheses} & {ISO, S}, path
