"""misconfigure(): a configuration change left until someone fixes it, healed by its revert.

The change and revert here are the fault's own contract (a catalogue action with its
arguments, or an async callable); the real thing, a rate limiter's key switched to
fixed_window and restored by the operator, is scenarios/test_remediate_misconfigured_limit.py."""

from __future__ import annotations

import pytest

from pytest_operator._actions import Action, ActionError, Args, Param, Risk
from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._chaos import Chaos, Misconfigure, check_leavable, misconfigure
from pytest_operator._fixtures import RecordingChaos
from pytest_operator._operator import InjectionLog


class Config:
    """A configuration store the actions act on."""

    def __init__(self) -> None:
        self.algorithm = "sliding_log"
        self.log: list[str] = []

    def catalogue(self) -> tuple[Action, Action]:
        async def set_algorithm(args: Args) -> str:
            self.algorithm = str(args["algorithm"])
            self.log.append(f"set {self.algorithm}")
            return "set"

        async def restore(args: Args) -> str:
            self.algorithm = "sliding_log"
            self.log.append("restored")
            return "restored"

        algorithm = Param("algorithm", str, "algorithm", choices=("sliding_log", "fixed_window"))
        return (
            Action("set_algorithm", "set it", Risk.MEDIUM, (algorithm,), set_algorithm),
            Action("restore", "declared again", Risk.MEDIUM, (), restore, idempotent=True),
        )


def test_its_root_cause_is_a_misconfiguration_where_the_traffic_meets_it() -> None:
    config = Config()
    change, revert = config.catalogue()
    fault = misconfigure((change, {"algorithm": "fixed_window"}), revert=(revert, {}))
    assert fault.root_cause == RootCause(FaultKind.MISCONFIGURATION, "client")
    assert fault.describe() == "misconfigure(set_algorithm(algorithm=fixed_window))"
    named = misconfigure((change, {"algorithm": "fixed_window"}), revert=(revert, {}), what="k1")
    assert named.describe() == "misconfigure(k1)"
    check_leavable(fault)  # may be left for the operator: no ChaosUnsupported


def test_bad_arguments_or_steps_are_refused_when_built() -> None:
    change, revert = Config().catalogue()
    with pytest.raises(ActionError, match="algorithm=gcra"):
        misconfigure((change, {"algorithm": "gcra"}), revert=(revert, {}))
    with pytest.raises(TypeError, match="revert"):
        misconfigure((change, {"algorithm": "fixed_window"}), revert="restore")  # type: ignore[arg-type]


async def test_injected_then_healed_by_its_revert() -> None:
    config = Config()
    change, revert = config.catalogue()
    fault = misconfigure((change, {"algorithm": "fixed_window"}), revert=(revert, {}))
    async with Chaos(object()).inject(fault) as injection:  # type: ignore[arg-type]
        assert config.algorithm == "fixed_window" and injection.active
    assert config.algorithm == "sliding_log" and not injection.active
    assert config.log == ["set fixed_window", "restored"]


async def test_left_in_place_until_teardown_and_reverted_again_after_a_fix() -> None:
    config = Config()
    _, revert = config.catalogue()
    calls: list[str] = []

    async def break_it() -> None:
        calls.append("change")
        config.algorithm = "fixed_window"

    async def fix_it() -> None:
        calls.append("revert")
        config.algorithm = "sliding_log"

    chaos = RecordingChaos(Chaos(object()), InjectionLog())  # type: ignore[arg-type]
    injection = await chaos.leave(misconfigure(break_it, revert=fix_it, what="switched"))
    assert isinstance(injection.fault, Misconfigure) and injection.left_in_place
    assert config.algorithm == "fixed_window" and injection.active
    await revert.run({})  # the operator's fix
    assert config.algorithm == "sliding_log"
    await chaos.aclose()  # teardown: the revert again, harmless after the fix
    assert calls == ["change", "revert"] and not injection.active
    assert config.algorithm == "sliding_log"
