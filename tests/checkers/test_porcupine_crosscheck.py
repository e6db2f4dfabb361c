"""Our linearizability checker against Porcupine, on a few hundred random register histories.

Porcupine (github.com/anishathalye/porcupine, the Go checker etcd's robustness tests use)
judges each history through tools/porcupine-check, built once here with ``go build``; every
verdict of ``check()`` must equal Porcupine's. The histories come from
benchmarks/histories.py (clients against a simulated linearizable register, some ops
indeterminate): as generated (linearizable by construction), with one stale read injected
(not linearizable by construction), and randomly mutated (a read's result, a CAS's compare
or outcome, a write turned into an error: the truth is unknown, both checkers must agree).
Indeterminate ops make Porcupine's search exponential, so those histories stay small.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from pytest_operator._history import Op, OpKind, Outcome
from pytest_operator._linearizable import check

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from histories import Spec, generate, run_porcupine  # noqa: E402  (benchmarks/ is not a package)

PORCUPINE_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def porcupine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tools/porcupine-check, built from the checkout's source for this module."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed: the Porcupine cross-check builds tools/porcupine-check")
    binary = tmp_path_factory.mktemp("porcupine") / "porcupine-check"
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ROOT / "tools" / "porcupine-check",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, f"go build failed:\n{done.stderr}"
    return binary


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    ops: tuple[Op, ...]
    initial: str | None = None
    expected: bool | None = None  # the verdict by construction; None: unknown


@dataclass(frozen=True, slots=True)
class Verdicts:
    ours: Counter[bool]
    disagreements: tuple[str, ...]


def judge(cases: list[Case], binary: Path) -> Verdicts:
    """Both checkers on every case; a disagreement (with each other, or with the verdict a
    case has by construction) is described in one line."""
    ours: Counter[bool] = Counter()
    wrong: list[str] = []
    for case in cases:
        mine = check(case.ops, initial=case.initial).valid
        theirs = run_porcupine(
            case.ops, initial=case.initial, timeout_s=PORCUPINE_TIMEOUT_S, binary=binary
        )
        ours[mine] += 1
        if theirs.valid is None:
            wrong.append(f"{case.name}: Porcupine gave no verdict in {PORCUPINE_TIMEOUT_S} s")
        elif mine != theirs.valid or (case.expected is not None and mine != case.expected):
            wrong.append(
                f"{case.name}: ours valid={mine}, Porcupine {theirs.result} {theirs.per_key},"
                f" by construction {case.expected}"
            )
    return Verdicts(ours, tuple(wrong))


def spec(seed: int, *, indeterminate: bool, anomaly: bool = False) -> Spec:
    """A small history: 10-60 ops (at most 40 with indeterminate ops), 1-3 keys, 2-5 clients."""
    rng = random.Random(seed)
    return Spec(
        ops=rng.randint(10, 40 if indeterminate else 60),
        keys=rng.randint(1, 3),
        clients=rng.randint(2, 5),
        indeterminate=rng.choice((0.1, 0.15, 0.2)) if indeterminate else 0.0,
        anomaly=anomaly,
        seed=seed,
    )


def test_generated_histories_are_linearizable_for_both(porcupine: Path) -> None:
    cases = [
        Case(f"seed {seed}", generate(spec(seed, indeterminate=seed % 2 == 0)).ops, expected=True)
        for seed in range(120)
    ]
    verdicts = judge(cases, porcupine)
    assert not verdicts.disagreements, "\n".join(verdicts.disagreements)
    assert verdicts.ours[True] == 120


def test_a_stale_read_is_illegal_for_both(porcupine: Path) -> None:
    cases = []
    for seed in range(200):
        try:
            history = generate(spec(seed, indeterminate=seed % 2 == 0, anomaly=True))
        except ValueError:  # too short to hold a write, its overwrite and a later read
            continue
        cases.append(Case(f"seed {seed} (stale read {history.stale})", history.ops, expected=False))
        if len(cases) == 120:
            break
    assert len(cases) == 120, "most small histories can take a stale read"
    verdicts = judge(cases, porcupine)
    assert not verdicts.disagreements, "\n".join(verdicts.disagreements)
    assert verdicts.ours[False] == 120


def _values(ops: tuple[Op, ...], key: str) -> list[str | None]:
    return [None, *sorted({op.value for op in ops if op.key == key and op.value is not None})]


def _reread(op: Op, ops: tuple[Op, ...], rng: random.Random) -> Op:
    return replace(op, result=rng.choice(_values(ops, op.key)))


def _recompare(op: Op, ops: tuple[Op, ...], rng: random.Random) -> Op:
    return replace(op, expected=rng.choice(_values(ops, op.key)))


def _refuse(op: Op, ops: tuple[Op, ...], rng: random.Random) -> Op:
    return replace(op, outcome=Outcome.REJECTED, result=rng.choice(_values(ops, op.key)))


def _fail(op: Op, ops: tuple[Op, ...], rng: random.Random) -> Op:
    return replace(op, outcome=Outcome.ERROR, result=None)


Change = Callable[[Op, tuple[Op, ...], random.Random], Op]

# what a mutation applies to, and the mutation
MUTATIONS: tuple[tuple[Callable[[Op], bool], Change], ...] = (
    (lambda op: op.kind == OpKind.READ and op.outcome is Outcome.OK, _reread),
    (lambda op: op.kind == OpKind.CAS and op.outcome is not Outcome.TIMEOUT, _recompare),
    (lambda op: op.kind == OpKind.CAS and op.outcome is Outcome.OK, _refuse),
    (lambda op: op.kind == OpKind.CAS and op.outcome is Outcome.REJECTED, _reread),
    (lambda op: op.kind == OpKind.WRITE and op.outcome is Outcome.OK, _fail),
)


def mutate(ops: tuple[Op, ...], rng: random.Random) -> tuple[tuple[Op, ...], str]:
    """``ops`` with one or two ops changed at random; the changes, described."""
    changed = list(ops)
    said = []
    for _ in range(rng.randint(1, 2)):
        applies, change = rng.choice(MUTATIONS)
        candidates = [i for i, op in enumerate(changed) if applies(op)]
        if not candidates:
            continue
        i = rng.choice(candidates)
        changed[i] = change(changed[i], ops, rng)
        said.append(f"{change.__name__.strip('_')} op {changed[i].index}")
    return tuple(changed), ", ".join(said) or "unchanged"


def test_mutated_histories_get_the_same_verdict_from_both(porcupine: Path) -> None:
    cases = []
    for seed in range(160):
        rng = random.Random(10_000 + seed)
        ops, said = mutate(generate(spec(seed, indeterminate=seed % 2 == 1)).ops, rng)
        cases.append(Case(f"seed {seed} ({said})", ops))
    verdicts = judge(cases, porcupine)
    assert not verdicts.disagreements, "\n".join(verdicts.disagreements)
    # not vacuous: the mutations make both kinds of history
    assert verdicts.ours[True] >= 20 and verdicts.ours[False] >= 20, verdicts.ours


def test_an_initial_value_is_judged_alike(porcupine: Path) -> None:
    cases = [
        Case(f"seed {seed}, initial 'init'", generate(spec(seed, indeterminate=False)).ops, "init")
        for seed in range(40)
    ]
    verdicts = judge(cases, porcupine)
    assert not verdicts.disagreements, "\n".join(verdicts.disagreements)
    assert verdicts.ours[False] >= 5, "a read of an absent key is impossible from 'init'"
