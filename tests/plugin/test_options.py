"""The plugin's options: each has an ini twin; bad values are UsageErrors naming them."""

from __future__ import annotations

import pytest

from tests.plugin.conftest import BASE_INI

PASSING = "def test_ok():\n    assert True\n"


def test_defaults_in_report_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "operator: subject=(from markers) cluster=embedded nodes=3"
            " observe-interval=0.25s diagnoser=causal trials=1"
        ]
    )


def test_ini_twins_are_read(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        BASE_INI + "operator_cluster = external\noperator_nodes = 5\n"
        "operator_observe_interval = 0.1\noperator_trials = 3\n"
    )
    pytester.makepyfile(PASSING)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*cluster=external nodes=5 observe-interval=0.1s*trials=3"])


def test_flag_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(BASE_INI + "operator_nodes = 5\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("--nodes=4")
    result.stdout.fnmatch_lines(["*nodes=4*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cluster=kubernetes"],
            "ERROR: --cluster=kubernetes: invalid value; valid values: embedded, compose, external",
        ),
        (
            ["--diagnoser=oracle"],
            "ERROR: --diagnoser=oracle: invalid value; valid values: causal, claude, all",
        ),
        (["--nodes=0"], "ERROR: --nodes=0: must be an integer >= 1"),
        (["--nodes=three"], "ERROR: --nodes=three: must be an integer >= 1"),
        (["--trials=-2"], "ERROR: --trials=-2: must be an integer >= 1"),
        (["--observe-interval=0"], "ERROR: --observe-interval=0: must be a number >= 0.01"),
        (["--observe-interval=nan"], "ERROR: --observe-interval=nan: must be a number >= 0.01"),
        (
            ["--subject=nosuch"],
            "ERROR: --subject=nosuch: no such subject; installed subjects: ratelimiter*",
        ),
    ],
)
def test_bad_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.subject(name, **options):*", "@pytest.mark.chaos(*faults):*"]
    )


def test_scenarios_for_another_subject_are_skipped_with_reason(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        "import pytest\npytestmark = pytest.mark.subject('ratelimiter')\n" + PASSING
    )
    pytester.makepyfile(
        test_other="import pytest\npytestmark = pytest.mark.subject('tikv')\n" + PASSING
    )
    result = pytester.runpytest("-rs", "--subject=ratelimiter", "-p", "no:randomly")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*scenario for subject tikv; this run's is ratelimiter"])
