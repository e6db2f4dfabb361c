"""recommend(): actions chosen by the fault kinds they declare and their target
parameter (or none, for an action on the whole subject), never by their names."""

from __future__ import annotations

from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._diagnosis import ActionInfo, Hypothesis, recommend


def info(
    name: str,
    remedies: tuple[FaultKind, ...],
    target: str | None = "svc",
    params: tuple[tuple[str, tuple[str, ...]], ...] = (("svc", ("a", "b")),),
    required: tuple[str, ...] = ("svc",),
) -> ActionInfo:
    return ActionInfo(name, name, "high", params, remedies, target, required)


def top(kind: FaultKind, component: str = "a") -> list[Hypothesis]:
    return [
        Hypothesis(RootCause(kind, component), 0.9),
        Hypothesis(RootCause(FaultKind.CRASH, "b"), 0.1),
    ]


def test_an_action_declaring_the_kind_is_recommended_whatever_its_name() -> None:
    actions = [
        info("bounce", (FaultKind.CRASH, FaultKind.PAUSE)),
        info("restart_svc", ()),  # "restart" in the name, remedies nothing
    ]
    recs = recommend(top(FaultKind.PAUSE), actions)
    assert [(r.action, r.args) for r in recs] == [("bounce", (("svc", "a"),))]
    assert recs[0].reason == "remedies pause of a"


def test_only_the_top_hypothesis_is_remedied() -> None:
    actions = [info("bounce", (FaultKind.CRASH,))]
    assert recommend(top(FaultKind.LATENCY), actions) == ()


def test_a_target_that_does_not_accept_the_component_is_skipped() -> None:
    actions = [info("bounce", (FaultKind.CRASH,))]
    assert recommend(top(FaultKind.CRASH, "redis"), actions) == ()


def test_a_free_target_parameter_takes_the_component() -> None:
    actions = [info("bounce", (FaultKind.CRASH,), params=(("svc", ()),))]
    assert [r.args for r in recommend(top(FaultKind.CRASH, "redis"), actions)] == [
        (("svc", "redis"),)
    ]


def test_an_action_needing_more_than_it_can_be_given_is_not_recommended() -> None:
    actions = [
        info(
            "set_limit",
            (FaultKind.CRASH,),
            params=(("svc", ("a",)), ("limit", ())),
            required=("svc", "limit"),
        ),
        info("fix_all", (FaultKind.CRASH,), target=None),
    ]
    assert recommend(top(FaultKind.CRASH), actions) == ()


def test_a_cluster_wide_action_needing_no_parameter_is_recommended_without_arguments() -> None:
    actions = [
        info("reapply", (FaultKind.MISCONFIGURATION,), target=None, params=(), required=()),
        info(
            "tune",
            (FaultKind.MISCONFIGURATION,),
            target=None,
            params=(("limit", ()),),
            required=("limit",),
        ),
        info("reapply_other", (FaultKind.CRASH,), target=None, params=(), required=()),
        info(
            "optional",
            (FaultKind.MISCONFIGURATION,),
            target=None,
            params=(("dry", ("yes", "no")),),
            required=(),
        ),
    ]
    recs = recommend(top(FaultKind.MISCONFIGURATION, "client"), actions)
    assert [(r.action, r.args, r.reason) for r in recs] == [
        ("reapply", (), "remedies misconfiguration"),
        ("optional", (), "remedies misconfiguration"),  # an optional parameter stays unset
    ]


def test_targeted_and_cluster_wide_remedies_keep_the_catalogue_order() -> None:
    actions = [
        info("reapply", (FaultKind.CRASH,), target=None, params=(), required=()),
        info("bounce", (FaultKind.CRASH,)),
    ]
    recs = recommend(top(FaultKind.CRASH), actions)
    assert [(r.action, r.args) for r in recs] == [("reapply", ()), ("bounce", (("svc", "a"),))]
