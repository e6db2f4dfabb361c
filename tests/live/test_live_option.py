"""``--operator-live`` and its ini twin ``operator_live``: off by default, a bad ini value a
usage error naming it and the valid ones, and off (said in the report header) when the
output is not a terminal, as in CI. Runs here pipe pytest's output, as CI does."""

from __future__ import annotations

import pytest

from tests.pytester_runs import INI

PASSING = "def test_ok():\n    assert True\n"
OFF = "operator: live view off: the output is not a terminal (output stays plain)"


@pytest.mark.parametrize("value", ["maybe", "2", "onn"])
def test_a_bad_ini_value_is_a_usage_error_naming_it_and_the_valid_ones(
    pytester: pytest.Pytester, value: str
) -> None:
    pytester.makeini(INI + f"operator_live = {value}\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: operator_live={value}: invalid value;"
            " valid values: true, yes, on, 1, false, no, off, 0"
        ]
    )


def test_off_by_default_and_nothing_said(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert "live view" not in result.stdout.str()


@pytest.mark.parametrize(
    ("ini", "args"),
    [("operator_live = true\n", ()), ("operator_live = ON\n", ()), ("", ("--operator-live",))],
)
def test_asked_for_without_a_terminal_it_is_off_and_the_header_says_so(
    pytester: pytest.Pytester, ini: str, args: tuple[str, ...]
) -> None:
    pytester.makeini(INI + ini)
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([OFF])
    assert "\x1b[" not in result.stdout.str() + result.stderr.str()


def test_the_flag_wins_over_an_ini_that_says_no(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "operator_live = no\n")
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess("--operator-live")
    result.stdout.fnmatch_lines([OFF])  # asked for by the flag; off only for want of a tty
    result = pytester.runpytest_subprocess()
    assert "live view" not in result.stdout.str()


def test_off_under_xdist_whose_workers_write_no_terminal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest_subprocess("-n", "2", "--operator-live")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["operator: live view off: tests run in xdist workers (output stays plain)"]
    )
