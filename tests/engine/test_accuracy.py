"""AC@k, Avg@k, the false-positive rate and the constant baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_operator._accuracy import (
    CaseResult,
    baseline,
    engine_accuracy,
    merge_cases,
    read_cases,
    summarize,
    write_json,
)


def case(
    scenario: str, expected: str | None, rank: int | None, engine: str = "causal"
) -> CaseResult:
    ranked = ("a",) * (rank or 0) if expected else (("x",) if rank else ())
    return CaseResult(scenario, 1, engine, expected, ranked, rank, 0.5, 0.001)


def test_ac_at_k_and_avg_at_5() -> None:
    results = [
        case("s1", "crash(n1)", 1),
        case("s2", "pause(n2)", 2),
        case("s3", "partition(n2 <-> r)", None),
        case("s4", "crash(n1)", 4),
    ]
    acc = engine_accuracy("causal", results)
    assert (acc.cases, acc.ac1, acc.ac3) == (4, 0.25, 0.5)
    # AC@1..5 = .25, .5, .5, .75, .75
    assert acc.avg5 == pytest.approx((0.25 + 0.5 + 0.5 + 0.75 + 0.75) / 5)
    assert acc.controls == 0 and acc.false_positive_rate is None


def test_false_positives_count_controls_with_any_answer() -> None:
    results = [case("c1", None, None), case("c2", None, 1), case("s", "crash(n1)", 1)]
    acc = engine_accuracy("causal", results)
    assert (acc.controls, acc.false_positive_rate) == (2, 0.5)


def test_baseline_answers_the_most_frequent_cause() -> None:
    results = [case("s1", "crash(n1)", 1), case("s2", "crash(n1)", 1), case("s3", "pause(n2)", 1)]
    base = baseline(results)
    assert base is not None
    assert base.engine == "constant-baseline (crash(n1))"
    assert base.ac1 == pytest.approx(2 / 3)
    assert [a.engine for a in summarize(results)] == ["causal", base.engine]


def test_json_has_summary_and_cases(tmp_path: Path) -> None:
    path = tmp_path / "out" / "accuracy.json"
    write_json(path, [case("s1", "crash(n1)", 1)])
    doc = json.loads(path.read_text())
    assert doc["summary"][0]["engine"] == "causal" and doc["summary"][0]["ac1"] == 1.0
    assert doc["cases"][0]["scenario"] == "s1"


def test_a_case_with_two_causes_scores_both_within_the_top_two() -> None:
    """|V in top k| / min(k, |V|): ranked 1st and 2nd is a hit at every k; 1st and 4th
    is a hit at k=1, half at k=2 and 3, whole at k=4."""
    both = [case("two", "crash(n1)", 1), case("two", "partition(c <-> n3)", 2)]
    acc = engine_accuracy("causal", both)
    assert (acc.cases, acc.ac1, acc.ac3, acc.avg5) == (1, 1.0, 1.0, 1.0)
    late = [case("two", "crash(n1)", 1), case("two", "partition(c <-> n3)", 4)]
    acc = engine_accuracy("causal", late)
    assert (acc.ac1, acc.ac3) == (1.0, 0.5)
    assert acc.avg5 == pytest.approx((1 + 0.5 + 0.5 + 1 + 1) / 5)
    # the baseline counts the case once, a hit when its one answer is among the causes
    base = baseline([*both, case("one", "crash(n1)", 1)])
    assert base is not None and base.engine == "constant-baseline (crash(n1))"
    assert (base.cases, base.ac1, base.ac3) == (2, 1.0, 0.75)


def test_a_summary_row_reads_back_and_a_bad_one_is_refused() -> None:
    from dataclasses import asdict

    from pytest_operator._accuracy import EngineAccuracy

    row = engine_accuracy("causal", [case("s1", "crash(n1)", 1)])
    assert EngineAccuracy.from_dict(json.loads(json.dumps(asdict(row)))) == row
    with pytest.raises(ValueError, match=r"missing field 'ac1'$"):
        EngineAccuracy.from_dict({"engine": "causal", "cases": 1})
    with pytest.raises(ValueError, match=r"^not a number: 'high'$"):
        EngineAccuracy.from_dict({**asdict(row), "ac3": "high"})


def test_cases_read_back_and_merge(tmp_path: Path) -> None:
    first = [case("a", "crash(x)", 1), case("b", "pause(y)", 1)]
    path = tmp_path / "accuracy.json"
    write_json(path, first)
    assert read_cases(path.read_text()) == first
    again = case("b", "crash(x)", 2)  # scenario b rerun into the same results
    merged = merge_cases(read_cases(path.read_text()), [again, case("c", None, None)])
    assert [(c.scenario, c.expected) for c in merged] == [
        ("a", "crash(x)"),
        ("b", "crash(x)"),
        ("c", None),
    ]
    with pytest.raises(ValueError, match=r"^not an accuracy file of pytest-operator \(no"):
        read_cases('{"cases": [{"scenario": "x"}]}')
    with pytest.raises(ValueError, match=r"^not an accuracy file of pytest-operator \("):
        read_cases("not json")


def test_a_second_run_into_the_same_allure_results_adds_its_cases(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    from pytest_operator._allure import ACCURACY_FILE, AllureReporting

    reporting = AllureReporting(pytestconfig, tmp_path)
    assert reporting._earlier_cases() == [] and reporting._earlier_subjects() == []
    write_json(tmp_path / ACCURACY_FILE, [case("a", "crash(x)", 1)])
    (tmp_path / "environment.properties").write_text("subject=ratelimiter\nnodes=3\n")
    assert [c.scenario for c in reporting._earlier_cases()] == ["a"]
    assert reporting._earlier_subjects() == ["ratelimiter"]
    (tmp_path / ACCURACY_FILE).write_text("{broken")
    assert reporting._earlier_cases() == []  # left out, with a warning in the log
