"""The mesh faults and selectors as values: ground truth, descriptions, validation,
pickling, and how roles in an observation pick a leader, followers and split groups."""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest

from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._chaos import (
    Fault,
    Isolate,
    Partition,
    Split,
    SplitMinority,
    SplitNoQuorum,
    _in_thread,
    isolate,
    kill,
    partition,
    pause,
    restart_with_data_loss,
    split,
    split_minority,
    split_no_quorum,
)
from pytest_operator._selectors import Roles, follower, leader, no_quorum_groups
from pytest_operator._signals import ComponentSignals, Observation, Role

CASES = [
    (partition("e-1", "e-2"), RootCause(FaultKind.PARTITION, "e-1", "e-2"),
     "partition(e-1 -> e-2)"),
    (partition("e-1", "e-2", one_way=True), RootCause(FaultKind.PARTITION, "e-1", "e-2"),
     "partition(e-1 -> e-2, one way)"),
    (isolate("e-3"), RootCause(FaultKind.ISOLATION, "e-3"), "isolate(e-3)"),
    (split(["e-1"], ["e-2", "e-3"]), RootCause(FaultKind.ISOLATION, "e-1"),
     "split(e-1 | e-2+e-3)"),
    (split(["e-4", "e-3"], ["e-1", "e-2", "e-5"]),
     RootCause(FaultKind.SPLIT, "e-1+e-2+e-5|e-3+e-4"), "split(e-4+e-3 | e-1+e-2+e-5)"),
    (split(["e-1"], ["e-2"], ["e-3"]), RootCause(FaultKind.SPLIT, "e-1|e-2|e-3"),
     "split(e-1 | e-2 | e-3)"),
    (kill(leader()), RootCause(FaultKind.CRASH, "leader()"), "kill(leader())"),
    (pause(follower(1)), RootCause(FaultKind.PAUSE, "follower(1)"), "pause(follower(1))"),
    (isolate(leader()), RootCause(FaultKind.ISOLATION, "leader()"), "isolate(leader())"),
    (restart_with_data_loss(follower()), RootCause(FaultKind.DATA_LOSS, "follower(0)"),
     "restart_with_data_loss(follower(0))"),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "cause", "text"), CASES, ids=[c[2] for c in CASES])
def test_ground_truth_description_and_pickling(fault: Fault, cause: RootCause, text: str) -> None:
    assert fault.root_causes == (cause,)
    assert fault.describe() == text == str(fault)
    copy = pickle.loads(pickle.dumps(fault))
    assert copy == fault and copy.root_causes == (cause,)


def test_split_order_makes_the_cause_canonical() -> None:
    bound = Split((("e-10", "e-2"), ("e-3", "e-1")), order=("e-1", "e-2", "e-3", "e-10"))
    assert bound.root_cause == RootCause(FaultKind.SPLIT, "e-1+e-3|e-2+e-10")
    assert bound == Split((("e-10", "e-2"), ("e-3", "e-1")))  # order and token: not identity


def test_builders() -> None:
    assert split(split_minority()) == split_minority() == SplitMinority()
    assert split(split_no_quorum()) == SplitNoQuorum()
    assert split_minority().describe() == "split_minority()"
    assert split_no_quorum().describe() == "split_no_quorum()"
    assert Isolate("a") == isolate("a") and Partition("a", "b") == partition("a", "b")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: split(["a", "b"]), "a split needs two groups or more, got 1"),
        (lambda: split(["a"], []), "a split's groups cannot be empty"),
        (lambda: split(["a", "b"], ["b"]), "b is in two groups of the split"),
        (lambda: split("ab", "cd"), "split takes groups (sequences of names), got ['ab', 'cd']"),
        (lambda: split(split_minority(), ["a"]), "split takes either groups of names or one"),
        (lambda: follower(-1), "follower index must be 0 or more, got -1"),
        (lambda: no_quorum_groups(["a"]), "a split needs two members or more, got ['a']"),
    ],
)
def test_bad_parameters_are_clear_errors(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(ValueError) as err:
        build()
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("n", "groups"),
    [
        (3, ((1,), (2,), (3,))),
        (4, ((1, 2), (3, 4))),
        (5, ((1, 2), (3, 4), (5,))),
        (7, ((1, 2, 3), (4, 5, 6), (7,))),
    ],
)
def test_no_quorum_groups_hold_no_majority(n: int, groups: tuple[tuple[int, ...], ...]) -> None:
    members = [f"e-{i}" for i in range(1, n + 1)]
    expected = tuple(tuple(f"e-{i}" for i in g) for g in groups)
    assert no_quorum_groups(members) == expected
    assert all(len(g) <= n // 2 for g in expected)


def member(name: str, role: Role | None, leader_: str | None, term: int = 5) -> ComponentSignals:
    return ComponentSignals(name, True, role=role, term=term, leader=leader_)


MESH = ("e-1", "e-2", "e-3", "e-4", "e-5")


def test_the_leader_is_the_one_a_majority_agrees_on() -> None:
    # e-1 was cut off and still believes it leads (term 4); e-2..e-5 elected e-3 (term 5)
    obs = Observation(
        at=0.0,
        components=(
            member("e-1", Role.LEADER, "e-1", term=4),
            member("e-2", Role.FOLLOWER, "e-3"),
            member("e-3", Role.LEADER, "e-3"),
            member("e-4", Role.FOLLOWER, "e-3"),
            member("e-5", Role.FOLLOWER, "e-3"),
        ),
    )
    roles = Roles.of(obs, MESH)
    assert (roles.leader, roles.followers) == ("e-3", ("e-2", "e-4", "e-5"))


def test_no_majority_means_no_leader() -> None:
    obs = Observation(
        at=0.0,
        components=(
            member("e-1", Role.LEADER, "e-1"),
            member("e-2", Role.FOLLOWER, "e-1"),
            ComponentSignals("e-3", False),
            ComponentSignals("e-4", False),
            member("e-5", Role.CANDIDATE, None),
        ),
    )
    roles = Roles.of(obs, MESH)
    assert (roles.leader, roles.followers) == (None, ())
    assert roles.seen == (
        "e-1=leader(leader e-1, term 5) e-2=follower(leader e-1, term 5) e-3=unreachable "
        "e-4=unreachable e-5=candidate(leader None, term 5)"
    )


def test_without_a_mesh_the_members_are_those_reporting_a_role() -> None:
    obs = Observation(
        at=0.0,
        components=(
            ComponentSignals("store", True),
            member("a", Role.FOLLOWER, "b"),
            member("b", Role.LEADER, "b"),
        ),
    )
    roles = Roles.of(obs, ())
    assert (roles.members, roles.leader, roles.followers) == (("a", "b"), "b", ("a",))


async def test_a_cancelled_injection_waits_for_its_iptables_calls() -> None:
    # Ctrl-C while rules are being added: the heal that follows must not race the adds
    done: list[str] = []

    def work() -> None:
        time.sleep(0.3)
        done.append("added")

    task = asyncio.ensure_future(_in_thread(work))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == ["added"]
