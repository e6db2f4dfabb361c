"""Diagnosis accuracy over a pytest run: AC@k and Avg@k per engine, the false-positive
rate on no-fault controls, beside a constant-answer baseline; and, for the fault cases an
engine's diagnosis was acted on (``operator.remediate``), the share recovered
(``operator.assert_recovered`` passed) and the median time to recover.

AC@k is the share of fault cases whose injected root cause an engine ranked within
its first k hypotheses; Avg@k is the mean of AC@1..AC@k. A case with several injected
causes V (faults composed) scores, as in the RCA literature (RCAEval, PDiagnose),
``|V within the top k| / min(k, |V|)``: two causes ranked 1st and 2nd are a full hit at
every k. The baseline always answers the most frequent injected cause: an engine that
cannot beat it has learned nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pytest_operator._causes import RootCause

BASELINE = "constant-baseline"


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One engine's answer in one scenario trial."""

    scenario: str
    trial: int
    engine: str
    expected: str | None
    """The injected root cause; None for a no-fault control."""
    ranked: tuple[str, ...]
    rank: int | None
    time_to_detect: float | None
    time_to_diagnose: float
    input_tokens: int | None = None
    output_tokens: int | None = None
    remediated: bool = False
    """The operator acted on this engine's diagnosis in this trial (ran at least one
    action: a dry run or a refusal is not acting)."""
    time_to_recover: float | None = None
    """Seconds from the first action to a sustained recovery; None: not recovered (or
    not remediated)."""


@dataclass(frozen=True, slots=True)
class EngineAccuracy:
    engine: str
    cases: int
    ac1: float | None
    ac3: float | None
    avg5: float | None
    controls: int
    false_positive_rate: float | None
    median_time_to_diagnose: float | None
    remediated: int = 0
    """Fault cases the operator acted on this engine's diagnosis."""
    recovered: float | None = None
    """Share of the remediated fault cases that recovered (None: none remediated)."""
    median_time_to_recover: float | None = None

    @classmethod
    def from_dict(cls, raw: object) -> EngineAccuracy:
        """One row of an accuracy JSON's ``summary``; a malformed row raises ValueError."""

        def number(value: object) -> float | None:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"not a number: {value!r}")
            return float(value)

        if not isinstance(raw, dict):
            raise ValueError(f"an accuracy row must be a JSON object, got {raw!r}")
        try:
            return cls(
                engine=str(raw["engine"]),
                cases=int(raw["cases"]),
                ac1=number(raw["ac1"]),
                ac3=number(raw["ac3"]),
                avg5=number(raw["avg5"]),
                controls=int(raw["controls"]),
                false_positive_rate=number(raw["false_positive_rate"]),
                median_time_to_diagnose=number(raw["median_time_to_diagnose"]),
                # absent from files written before remediation was measured
                remediated=int(raw.get("remediated", 0)),
                recovered=number(raw.get("recovered")),
                median_time_to_recover=number(raw.get("median_time_to_recover")),
            )
        except KeyError as exc:
            raise ValueError(f"accuracy row {raw!r}: missing field {exc.args[0]!r}") from exc


def _ac(cases: Sequence[Sequence[int | None]], k: int) -> float | None:
    """AC@k over cases, each the ranks of its injected causes."""
    if not cases:
        return None
    hits = [
        sum(1 for r in ranks if r is not None and r <= k) / min(k, len(ranks)) for ranks in cases
    ]
    return sum(hits) / len(cases)


def _fault_cases(results: Sequence[CaseResult]) -> list[list[CaseResult]]:
    """One engine's fault results grouped into cases (a scenario trial; one result per
    injected cause), in first-seen order."""
    cases: dict[tuple[str, int, str], list[CaseResult]] = {}
    for r in results:
        if r.expected is not None:
            cases.setdefault((r.scenario, r.trial, r.engine), []).append(r)
    return list(cases.values())


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def engine_accuracy(engine: str, results: Sequence[CaseResult]) -> EngineAccuracy:
    grouped = _fault_cases(results)
    cases = [[r.rank for r in case] for case in grouped]
    acted = [case[0] for case in grouped if case[0].remediated]
    ttrs = [r.time_to_recover for r in acted if r.time_to_recover is not None]
    controls = [r for r in results if r.expected is None]
    avg5 = None
    if cases:
        avg5 = sum(_ac(cases, k) or 0.0 for k in range(1, 6)) / 5
    return EngineAccuracy(
        engine=engine,
        cases=len(cases),
        ac1=_ac(cases, 1),
        ac3=_ac(cases, 3),
        avg5=avg5,
        controls=len(controls),
        false_positive_rate=(
            sum(1 for r in controls if r.ranked) / len(controls) if controls else None
        ),
        median_time_to_diagnose=_median([r.time_to_diagnose for r in results]),
        remediated=len(acted),
        recovered=len(ttrs) / len(acted) if acted else None,
        median_time_to_recover=_median(ttrs),
    )


def baseline(results: Sequence[CaseResult]) -> EngineAccuracy | None:
    """Always answer the most frequent injected cause (over distinct scenario trials)."""
    causes: dict[tuple[str, int], set[str]] = {}
    controls: set[tuple[str, int]] = set()
    for r in results:
        key = (r.scenario, r.trial)
        if r.expected is None:
            controls.add(key)
        else:
            causes.setdefault(key, set()).add(r.expected)
    if not causes:
        return None
    counts = Counter(c for v in causes.values() for c in v)
    answer = min(counts, key=lambda c: (-counts[c], c))
    cases = [[1 if c == answer else None for c in sorted(v)] for v in causes.values()]
    return EngineAccuracy(
        engine=f"{BASELINE} ({answer})",
        cases=len(cases),
        ac1=_ac(cases, 1),
        ac3=_ac(cases, 3),
        avg5=sum(_ac(cases, k) or 0.0 for k in range(1, 6)) / 5,
        controls=len(controls - set(causes)),
        false_positive_rate=1.0 if controls - set(causes) else None,
        median_time_to_diagnose=0.0,
    )


def summarize(results: Sequence[CaseResult]) -> list[EngineAccuracy]:
    engines = sorted({r.engine for r in results})
    out = [engine_accuracy(e, [r for r in results if r.engine == e]) for e in engines]
    base = baseline(results)
    if base is not None:
        out.append(base)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def table(rows: Sequence[EngineAccuracy]) -> list[str]:
    width = max([34, *(len(a.engine) for a in rows)])
    header = f"{'engine':<{width}} {'cases':>5} {'AC@1':>6} {'AC@3':>6} {'Avg@5':>6} "
    header += f"{'controls':>8} {'FP rate':>7} {'diagnose':>9}"
    header += f" {'remediated':>10} {'recovered':>9} {'recover':>8}"
    lines = [header]
    for a in rows:
        ttd = (
            "-"
            if a.median_time_to_diagnose is None
            else f"{a.median_time_to_diagnose * 1000:.1f} ms"
        )
        ttr = "-" if a.median_time_to_recover is None else f"{a.median_time_to_recover:.2f} s"
        lines.append(
            f"{a.engine:<{width}} {a.cases:>5} {_pct(a.ac1):>6} {_pct(a.ac3):>6}"
            f" {_pct(a.avg5):>6} {a.controls:>8} {_pct(a.false_positive_rate):>7} {ttd:>9}"
            f" {a.remediated:>10} {_pct(a.recovered):>9} {ttr:>8}"
        )
    return lines


def read_cases(text: str) -> list[CaseResult]:
    """The cases of an accuracy JSON (what :func:`write_json` wrote); ValueError if it is
    not one, naming what is missing."""
    try:
        doc = json.loads(text)
        return [CaseResult(**{**c, "ranked": tuple(c["ranked"])}) for c in doc["cases"]]
    except KeyError as exc:
        raise ValueError(f"not an accuracy file of pytest-operator (no {exc})") from exc
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"not an accuracy file of pytest-operator ({exc})") from exc


def merge_cases(earlier: Sequence[CaseResult], later: Sequence[CaseResult]) -> list[CaseResult]:
    """``earlier`` then ``later``; a case of ``later`` replaces an earlier one of the same
    scenario, trial and engine (a scenario run again into the same results)."""

    def key(c: CaseResult) -> tuple[str, int, str]:
        return c.scenario, c.trial, c.engine

    replaced = {key(c) for c in later}
    return [c for c in earlier if key(c) not in replaced] + list(later)


def write_json(path: Path, results: Sequence[CaseResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "summary": [asdict(a) for a in summarize(results)],
        "cases": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def cause_str(cause: RootCause | None) -> str | None:
    return None if cause is None else str(cause)
