"""etcd's invariants judged on hand-made observations (pure functions of one observation)."""

from __future__ import annotations

import pytest

from pytest_operator import (
    CLIENT,
    Category,
    ComponentSignals,
    Fact,
    LinkSignals,
    Observation,
    ProbeFailure,
    Role,
    SafetyViolation,
)
from subjects.etcd.invariants import invariants, member_down, no_leader, split_brain


def member(
    name: str,
    role: Role | None = Role.FOLLOWER,
    term: int = 2,
    leader: str | None = "etcd-1",
    quorum: bool | None = True,
    *,
    reachable: bool = True,
) -> ComponentSignals:
    return ComponentSignals(
        name,
        reachable=reachable,
        probe_failure=None if reachable else ProbeFailure.TIMEOUT,
        role=role,
        term=term,
        leader=leader,
        quorum=quorum,
        detail="follower in term 2; /health: {'health':'false'}",
    )


HEALTHY = (
    member("etcd-1", Role.LEADER),
    member("etcd-2"),
    member("etcd-3"),
)


def check(name: str, obs: Observation) -> set[str]:
    (inv,) = [i for i in invariants() if i.name == name]
    return {f.component for f in inv.check(obs)}


def test_a_healthy_cluster_breaks_no_invariant() -> None:
    obs = Observation(at=1.0, components=HEALTHY)
    for inv in invariants():
        assert inv.check(obs) == [], inv.name


def test_names_categories_and_graces() -> None:
    got = {i.name: (i.category, i.grace) for i in invariants(no_leader_grace_s=0.4)}
    assert got == {
        "member_down": (Category.AVAILABILITY, 0.25),
        "no_leader": (Category.AVAILABILITY, 0.4),
        "leader_change": (Category.AVAILABILITY, 0.0),
        "client_errors": (Category.AVAILABILITY, 0.5),
        "split_brain": (Category.SAFETY, 0.0),
        "linearizable": (Category.CONSISTENCY, 0.0),
    }


def test_a_stale_read_the_watch_reported_is_a_linearizable_finding_at_its_member() -> None:
    stale = SafetyViolation(
        "linearizable", ("etcd-3",), 1.0, 0.0, 0.9, "read k1 at etcd-3 saw '1', overwritten"
    )
    other = SafetyViolation("ghost_allowing", ("etcd-2",), 12.0, 10.0, 0.9)
    obs = Observation(at=1.0, components=HEALTHY, safety=(stale, other))
    (inv,) = [i for i in invariants() if i.name == "linearizable"]
    findings = inv.check(obs)
    assert [(f.component, f.message) for f in findings] == [("etcd-3", stale.detail)]
    assert inv.check(Observation(at=1.0, components=HEALTHY)) == []


def test_an_unreachable_member_is_down_and_not_judged_for_its_leader() -> None:
    obs = Observation(
        at=1.0,
        components=(*HEALTHY[:2], member("etcd-3", None, leader=None, reachable=False)),
    )
    assert {f.component for f in member_down(obs)} == {"etcd-3"}
    assert "timeout" in member_down(obs)[0].message
    assert no_leader(obs) == []


def test_no_leader_flags_a_member_without_leader_and_one_without_quorum() -> None:
    obs = Observation(
        at=1.0,
        components=(
            member("etcd-1", Role.LEADER, quorum=False),  # a leader no majority answers
            member("etcd-2", Role.CANDIDATE, leader=None, quorum=False),
            member("etcd-3", quorum=None),  # cannot say: not flagged
        ),
    )
    found = {f.component: f.message for f in no_leader(obs)}
    assert set(found) == {"etcd-1", "etcd-2"}
    assert found["etcd-2"] == "sees no leader (term 2)"
    assert found["etcd-1"].startswith("cannot commit: ")


@pytest.mark.parametrize(("terms", "flagged"), [((3, 3), {"etcd-1", "etcd-2"}), ((3, 4), set())])
def test_split_brain_is_two_leaders_in_one_term_only(
    terms: tuple[int, int], flagged: set[str]
) -> None:
    obs = Observation(
        at=1.0,
        components=(
            member("etcd-1", Role.LEADER, term=terms[0]),
            member("etcd-2", Role.LEADER, term=terms[1], leader="etcd-2"),
            member("etcd-3"),
        ),
    )
    assert {f.component for f in split_brain(obs)} == flagged


def test_leader_change_is_flagged_for_the_window_after_a_member_saw_it() -> None:
    facts = (
        Fact("since_leader_change_s", 1.5, "etcd-2"),
        Fact("since_leader_change_s", 7.0, "etcd-3"),
        Fact("leader_changes_seen", 4.0, "etcd-1"),
    )
    obs = Observation(at=1.0, components=HEALTHY, facts=facts)
    assert check("leader_change", obs) == {"etcd-2"}


def test_client_errors_read_the_client_links_over_the_threshold() -> None:
    links = (
        LinkSignals(CLIENT, "etcd-1", error_rate=0.5),
        LinkSignals(CLIENT, "etcd-2", error_rate=0.1),  # at the threshold: fine
        LinkSignals("etcd-1", "etcd-3", up=False, error_rate=1.0),  # a peer link: not ours
    )
    obs = Observation(at=1.0, components=HEALTHY, links=links)
    assert check("client_errors", obs) == {"etcd-1"}
