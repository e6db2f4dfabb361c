"""Faults as values: ground truth, descriptions, validation, pickling, and the
inject/heal contract (heal on exit whatever happens; a failed heal is never silent)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest

from pytest_operator._causes import FaultKind, RootCause
from pytest_operator._chaos import (
    ChaosTarget,
    Fault,
    HealError,
    bandwidth,
    blackhole,
    clock_skew,
    compose,
    kill,
    latency,
    partition,
    pause,
    reset_peer,
    restart_with_data_loss,
)

CASES = [
    (partition("node-2", "redis"), RootCause(FaultKind.PARTITION, "node-2", "redis"),
     "partition(node-2 -> redis)"),
    (blackhole("node-2", "redis"), RootCause(FaultKind.PARTITION, "node-2", "redis"),
     "blackhole(node-2 -> redis)"),
    (reset_peer("node-1", "redis"), RootCause(FaultKind.PARTITION, "node-1", "redis"),
     "reset_peer(node-1 -> redis)"),
    (latency("node-1", "redis", 200, jitter_ms=20), RootCause(FaultKind.LATENCY, "node-1", "redis"),
     "latency(node-1 -> redis, 200 +/- 20 ms)"),
    (bandwidth("node-3", "redis", 10), RootCause(FaultKind.BANDWIDTH, "node-3", "redis"),
     "bandwidth(node-3 -> redis, 10 KB/s)"),
    (kill("node-1"), RootCause(FaultKind.CRASH, "node-1"), "kill(node-1)"),
    (pause("node-2"), RootCause(FaultKind.PAUSE, "node-2"), "pause(node-2)"),
    (restart_with_data_loss("redis"), RootCause(FaultKind.DATA_LOSS, "redis"),
     "restart_with_data_loss(redis)"),
    (clock_skew("node-3", 120), RootCause(FaultKind.CLOCK_SKEW, "node-3"),
     "clock_skew(node-3, +120 s)"),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "cause", "text"), CASES, ids=[c[2] for c in CASES])
def test_ground_truth_and_description(fault: Fault, cause: RootCause, text: str) -> None:
    assert fault.root_cause == cause
    assert fault.root_causes == (cause,)
    assert fault.describe() == text == str(fault)


@pytest.mark.parametrize(("fault", "cause", "text"), CASES, ids=[c[2] for c in CASES])
def test_faults_pickle(fault: Fault, cause: RootCause, text: str) -> None:
    copy = pickle.loads(pickle.dumps(fault))
    assert copy == fault
    assert copy.root_cause == cause


def test_compose_carries_every_cause() -> None:
    both = compose(partition("node-2", "redis"), clock_skew("node-1", -30))
    assert both.root_cause is None
    assert both.root_causes == (
        RootCause(FaultKind.PARTITION, "node-2", "redis"),
        RootCause(FaultKind.CLOCK_SKEW, "node-1"),
    )
    assert both.describe() == "compose(partition(node-2 -> redis), clock_skew(node-1, -30 s))"


LATENCY_RULE = "latency needs ms > 0 and jitter_ms >= 0"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: latency("a", "b", 0), f"{LATENCY_RULE}, got ms=0, jitter_ms=0"),
        (lambda: latency("a", "b", 5, -1), f"{LATENCY_RULE}, got ms=5, jitter_ms=-1"),
        (lambda: bandwidth("a", "b", -1), "bandwidth needs kbps >= 0, got -1"),
        (lambda: clock_skew("a", 0), "clock_skew needs a non-zero offset in seconds"),
        (lambda: compose(kill("a")), "compose needs at least two faults"),
    ],
)  # fmt: skip
def test_bad_parameters_are_clear_errors(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(ValueError) as err:
        build()
    assert str(err.value) == message


@dataclass(frozen=True, slots=True)
class Recording(Fault):
    """A fault that records its calls and can fail on heal (tests the contract itself)."""

    log: list[str]
    fail_heal: bool = False

    @property
    def root_causes(self) -> tuple[RootCause, ...]:
        return (RootCause(FaultKind.CRASH, "x"),)

    def describe(self) -> str:
        return "recording(x)"

    async def _apply(self, target: ChaosTarget) -> None:
        self.log.append("apply")

    async def _heal(self, target: ChaosTarget) -> None:
        self.log.append("heal")
        if self.fail_heal:
            raise RuntimeError("proxy gone")


TARGET: ChaosTarget = None  # type: ignore[assignment]  # Recording never touches it


async def test_heals_on_normal_exit_and_records_times() -> None:
    calls: list[str] = []
    async with Recording(calls).inject(TARGET) as injection:
        assert injection.active
        calls.append("body")
    assert calls == ["apply", "body", "heal"]
    assert not injection.active
    assert injection.healed_at is not None and injection.healed_at >= injection.injected_at
    assert injection.duration is not None and injection.duration >= 0
    assert injection.root_cause == RootCause(FaultKind.CRASH, "x")


async def test_heals_when_the_body_raises() -> None:
    calls: list[str] = []
    with pytest.raises(KeyError):
        async with Recording(calls).inject(TARGET):
            raise KeyError("body")
    assert calls == ["apply", "heal"]


async def test_failed_heal_after_a_clean_body_raises() -> None:
    calls: list[str] = []
    with pytest.raises(HealError) as err:
        async with Recording(calls, fail_heal=True).inject(TARGET):
            pass
    assert str(err.value) == "healing recording(x) failed: proxy gone"
    assert isinstance(err.value.__cause__, RuntimeError)


async def test_failed_heal_never_masks_the_body(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    with pytest.raises(KeyError) as err:
        async with Recording(calls, fail_heal=True).inject(TARGET) as injection:
            raise KeyError("body")
    assert err.value.__notes__ == ["healing recording(x) failed: proxy gone"]
    assert isinstance(injection.heal_error, RuntimeError)
    assert "healing recording(x) failed: proxy gone" in caplog.text
