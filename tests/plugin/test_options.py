"""The plugin's options: each has an ini twin; bad values are UsageErrors naming them."""

from __future__ import annotations

import pytest

from pytest_operator._registry import installed
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
            "ERROR: --subject=nosuch: no such subject; installed subjects: "
            + ", ".join(sorted(installed())),
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


def test_claude_asked_for_without_a_key_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("--diagnoser=claude")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --diagnoser=claude: ANTHROPIC_API_KEY is not set: the claude engine*"]
    )


def test_all_without_a_key_runs_causal_and_says_why_claude_is_left_out(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("--diagnoser=all")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["operator: engine unavailable, left out: claude: ANTHROPIC_API_KEY is not set*"]
    )


def test_record_and_replay_together_or_a_missing_cassette_are_usage_errors(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest("--claude-record=a.json", "--claude-replay=b.json")
    result.stderr.fnmatch_lines(
        ["ERROR: --claude-record=a.json and --claude-replay=b.json: choose one"]
    )
    result = pytester.runpytest("--diagnoser=claude", "--claude-replay=missing.json")
    result.stderr.fnmatch_lines(["ERROR: --claude-replay=missing.json: no such file"])


def test_replay_cassette_makes_claude_available_without_a_key(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    pytester.makepyfile(PASSING)
    (pytester.path / "cassette.json").write_text('{"entries": {}}')
    result = pytester.runpytest("--diagnoser=all", "--claude-replay=cassette.json")
    result.assert_outcomes(passed=1)
    assert "left out" not in result.stdout.str()
    (pytester.path / "bad.json").write_text("[]")
    result = pytester.runpytest("--diagnoser=claude", "--claude-replay=bad.json")
    result.stderr.fnmatch_lines(
        ["ERROR: --claude-replay: cassette bad.json is not a cassette file*"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--operator-approve=all"],
            "*--operator-approve=all: invalid value; valid values: none, low, medium, high",
        ),
        (
            ["--operator-kill-switch=stop"],
            "*--operator-kill-switch=stop: invalid value; use file:PATH or env:NAME",
        ),
    ],
)
def test_bad_remediation_policy_is_a_usage_error(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(PASSING)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_remediation_policy_is_resolved_from_flags_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(BASE_INI + "operator_approve = none\noperator_dry_run = true\n")
    pytester.makepyfile(
        """
        import os
        from pathlib import Path
        from pytest_operator._options import ApproveLevel, resolve

        def test_policy(pytestconfig, tmp_path, monkeypatch):
            opts = resolve(pytestconfig)
            assert opts.approve is ApproveLevel.LOW  # the flag wins over the ini
            assert opts.dry_run is True  # from the ini
            assert opts.kill_switch.env == "STOP_OPERATOR"
            monkeypatch.delenv("STOP_OPERATOR", raising=False)
            assert not opts.kill_switch()
            monkeypatch.setenv("STOP_OPERATOR", "1")
            assert opts.kill_switch()
        """
    )
    result = pytester.runpytest(
        "--operator-approve=low", "--operator-kill-switch=env:STOP_OPERATOR"
    )
    result.assert_outcomes(passed=1)
