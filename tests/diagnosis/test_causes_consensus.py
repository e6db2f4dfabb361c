"""Consensus facts in the signal vocabulary, and the isolation and split causes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pytest_operator._causes import FaultKind, RootCause, split_cause
from pytest_operator._serde import case_from_json, case_to_json, from_data, to_data
from pytest_operator._signals import ComponentSignals, Observation, Role

ORDER = ("m1", "m2", "m3", "m4", "m5")
HERE = Path(__file__).parent


def test_split_cause_is_canonical_whatever_the_order_given() -> None:
    a = split_cause([["m5", "m3", "m4"], ["m2", "m1"]], ORDER)
    b = split_cause([("m1", "m2"), ("m3", "m4", "m5")], ORDER)
    assert a == b == RootCause(FaultKind.SPLIT, "m1+m2|m3+m4+m5")
    assert str(a) == "split(m1+m2|m3+m4+m5)"
    assert a.groups == (("m1", "m2"), ("m3", "m4", "m5"))


def test_split_cause_sorts_by_spec_order_not_by_name() -> None:
    order = ("node-10", "node-9", "node-2")
    assert split_cause([["node-2"], ["node-9"], ["node-10"]], order).component == (
        "node-10|node-9|node-2"
    )
    # names outside the order come after it, by name
    assert split_cause([["b", "x"], ["a"], ["node-2"]], order).component == "node-2|a|b+x"


def test_two_groups_with_a_single_member_are_its_isolation() -> None:
    assert split_cause([["m1", "m2"], ["m3"]], ORDER[:3]) == RootCause(FaultKind.ISOLATION, "m3")
    assert split_cause([["m3"], ["m1", "m2", "m4", "m5"]], ORDER) == RootCause(
        FaultKind.ISOLATION, "m3"
    )
    # a pair cut in two: the later member, deterministically
    assert split_cause([["m2"], ["m1"]], ORDER) == RootCause(FaultKind.ISOLATION, "m2")
    # three groups are a split, even of single members
    assert split_cause([["m3"], ["m1"], ["m2"]], ORDER) == RootCause(FaultKind.SPLIT, "m1|m2|m3")


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([["m1", "m2"]], "a split needs two groups or more, got 1"),
        ([["m1"], []], "a split's groups cannot be empty"),
        ([["m1", "m2"], ["m2", "m3"]], "m2 is in two groups of the split"),
        ([["m|1"], ["m2"]], "component name 'm|1' holds '|' or '+'"),
    ],
)
def test_split_cause_refuses_malformed_groups(groups: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("|", r"\|").replace("+", r"\+")):
        split_cause(groups, ORDER)


def test_split_matches_its_groups_in_any_order() -> None:
    canonical = split_cause([["m1", "m2"], ["m3", "m4", "m5"]], ORDER)
    shuffled = RootCause(FaultKind.SPLIT, "m5+m4+m3|m2+m1")
    assert canonical.matches(shuffled) and shuffled.matches(canonical)
    other = RootCause(FaultKind.SPLIT, "m1+m3|m2+m4+m5")
    assert not canonical.matches(other)
    three = RootCause(FaultKind.SPLIT, "m1+m2|m3+m4|m5")
    assert not canonical.matches(three) and not three.matches(canonical)
    assert not canonical.matches(RootCause(FaultKind.PARTITION, "m1+m2", "m3+m4+m5"))


def test_a_split_that_cuts_one_member_off_matches_its_isolation() -> None:
    isolation = RootCause(FaultKind.ISOLATION, "m3")
    assert RootCause(FaultKind.SPLIT, "m3|m1+m2").matches(isolation)
    assert isolation.matches(RootCause(FaultKind.SPLIT, "m1+m2|m3"))
    assert not isolation.matches(RootCause(FaultKind.ISOLATION, "m2"))
    assert not isolation.matches(RootCause(FaultKind.CRASH, "m3"))
    assert not isolation.matches(RootCause(FaultKind.SPLIT, "m1|m2|m3"))


def test_other_kinds_match_as_before() -> None:
    assert RootCause(FaultKind.PARTITION, "a", "b").matches(
        RootCause(FaultKind.PARTITION, "b", "a")
    )
    assert not RootCause(FaultKind.CRASH, "a").matches(RootCause(FaultKind.PAUSE, "a"))
    assert RootCause(FaultKind.CRASH, "a").groups == ()
    assert not RootCause(FaultKind.CRASH, "a").matches(RootCause(FaultKind.CRASH, "a", "b"))


def test_consensus_facts_default_to_none_and_round_trip() -> None:
    plain = ComponentSignals("m1", reachable=True)
    assert (plain.role, plain.term, plain.leader, plain.quorum) == (None, None, None, None)
    member = ComponentSignals("m1", True, role=Role.LEADER, term=7, leader="m1", quorum=True)
    obs = Observation(at=1.0, components=(member, plain))
    data = to_data(obs)
    assert data["components"][0]["role"] == "leader"
    assert from_data(Observation, json.loads(json.dumps(data))) == obs
    assert obs.summary() == "m1=up,leader m1=up"
    lost = ComponentSignals("m2", True, ready=False, role=Role.FOLLOWER, quorum=False)
    assert Observation(at=1.0, components=(lost,)).summary() == "m2=not ready,no-quorum"


def test_role_values_are_the_generic_words() -> None:
    assert [r.value for r in Role] == ["leader", "follower", "candidate", "learner"]


def _case_files() -> list[Path]:
    folders = [HERE / "cases", HERE / "link-cases", *sorted((HERE / "more-cases").iterdir())]
    return sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.json"))


def test_cases_serialized_before_the_consensus_facts_still_load() -> None:
    files = _case_files()
    assert len(files) >= 11
    for path in files:
        text = path.read_text()
        assert '"quorum"' not in text, f"{path} was written with the new fields"
        case = case_from_json(text)
        members = [c for o in case.observations for c in o.components]
        assert members, path
        assert all(c.role is None and c.term is None and c.leader is None for c in members)
        assert all(c.quorum is None for c in members)
        again = case_from_json(case_to_json(case))
        assert again == case, path


def test_consensus_facts_are_left_out_of_the_json_while_unset() -> None:
    from pytest_operator._serde import OMIT_DEFAULT

    fields = {f.name: f for f in dataclasses.fields(ComponentSignals)}
    for name in ("role", "term", "leader", "quorum"):
        assert fields[name].metadata.get(OMIT_DEFAULT) is True, name
    plain = to_data(ComponentSignals("m1", reachable=True, ready=None))
    assert "ready" in plain and plain["ready"] is None  # older fields are written as before
    assert not {"role", "term", "leader", "quorum"} & set(plain)
    # set to a value that is falsy, it is still written
    lost = to_data(ComponentSignals("m1", reachable=True, term=0, quorum=False))
    assert lost["term"] == 0 and lost["quorum"] is False and "role" not in lost
