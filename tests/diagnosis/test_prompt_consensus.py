"""The Claude engine's prompt for a consensus group: its facts, its mesh, its causes."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_operator._causes import FaultKind
from pytest_operator._prompt import SYSTEM_PROMPT, build_prompt, build_tool
from pytest_operator._serde import case_from_json
from tests.diagnosis.raft import Raft
from tests.diagnosis.test_prompt import fenced_data

CASES = Path(__file__).parent / "cases"


def test_a_members_consensus_facts_are_runs_and_its_term_a_range() -> None:
    case = Raft(3, "isolate", ("db-1",), settle=7.0).case()
    data = fenced_data(build_prompt(case).user)
    assert data["topology"]["mesh"] == ["db-1", "db-2", "db-3"]
    cut_off = data["components"]["db-1"]
    end = data["window"]["duration_s"]
    assert cut_off["role"] == [
        ["leader", 0.0, 1.25],
        ["follower", 1.5, 2.25],
        ["candidate", 2.5, end],
    ]
    assert cut_off["leader"] == [["db-1", 0.0, 1.25], ["none", 1.5, end]]
    assert cut_off["quorum"] == [[True, 0.0, 1.25], [False, 1.5, end]]
    assert cut_off["term"]["first"] == 5 and cut_off["term"]["last"] > 6
    new_leader = data["components"]["db-2"]
    assert new_leader["leader"][-1] == ["db-2", 1.25, end]
    assert data["links"]["db-2->db-1"]["up"][-1][0] is False


def test_a_silent_member_reports_no_consensus_facts() -> None:
    data = fenced_data(build_prompt(Raft(3, "crash", ("db-1",)).case()).user)
    killed = data["components"]["db-1"]
    assert killed["probe"][0][0] == "refused"
    assert not {"role", "leader", "quorum", "term"} & set(killed)


def test_subjects_without_consensus_get_no_consensus_keys() -> None:
    frozen = CASES / "test_frozen_node_is_detected_and_diagnosed_as_a_pause-trial1.json"
    case = case_from_json(frozen.read_text())
    data = fenced_data(build_prompt(case).user)
    assert "mesh" not in data["topology"]
    for signals in data["components"].values():
        assert not {"role", "leader", "quorum", "term"} & set(signals)


def test_a_long_five_member_split_fits_the_prompt() -> None:
    minority = (("db-1", "db-2", "db-3"), ("db-4", "db-5"))
    case = Raft(5, "split", groups=minority, settle=7.0).case()
    prompt = build_prompt(case)
    assert prompt.size < 24_000
    assert "omitted" not in fenced_data(prompt.user)


def test_the_system_prompt_describes_isolation_split_and_the_consensus_signals() -> None:
    for phrase in (
        "- isolation(c):",
        "- split(groups):",
        '"role" runs',
        '"quorum" runs',
        '"term" stats',
        "c then sees no leader",
        "answer isolation(c) then",
    ):
        assert phrase in SYSTEM_PROMPT, phrase
    assert "etcd" not in SYSTEM_PROMPT.lower() and "raft" not in SYSTEM_PROMPT.lower()


def test_the_tool_lets_a_split_name_its_groups() -> None:
    case = Raft(3, "none", timeout=1.0).case()
    hyp = build_tool(case)["input_schema"]["properties"]["hypotheses"]["items"]
    groups = hyp["properties"]["groups"]
    assert groups["type"] == ["array", "null"]
    assert groups["items"]["items"]["enum"] == ["db-1", "db-2", "db-3", "client"]
    assert "groups" in hyp["required"]
    assert FaultKind.SPLIT.value in hyp["properties"]["kind"]["enum"]
    json.dumps(hyp)  # plain JSON
