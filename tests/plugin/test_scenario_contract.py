"""The scenario contract, end to end: real pytest sessions (pytester, in a subprocess)
against a real embedded cluster, checking outcomes and the exact failure messages."""

from __future__ import annotations

import pytest

from tests.plugin.conftest import BASE_INI

INI = BASE_INI + "asyncio_mode = auto\nasyncio_default_test_loop_scope = session\n"
INI = INI.replace(
    "asyncio_default_fixture_loop_scope = function", "asyncio_default_fixture_loop_scope = session"
)

pytestmark = pytest.mark.slow


def test_misdiagnosis_message_names_expected_rank_and_top_three(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_wrong="""
        import pytest
        from pytest_operator import FaultKind, RootCause, kill, steady

        pytestmark = pytest.mark.subject("ratelimiter")

        @pytest.mark.chaos(kill("node-1"))
        async def test_expects_the_wrong_cause(operator, workload):
            await workload.start(steady(rate=50), keys="k1")
            run = await operator.monitor(until="node_down", timeout=15)
            run.assert_detected("node_down", component="node-1")
            await operator.assert_diagnosis(run, expected=RootCause(FaultKind.PAUSE, "node-1"))

        @pytest.mark.chaos(kill("node-2"))
        async def test_detection_deadline_missed(operator, workload):
            run = await operator.monitor(until="counter_drift", timeout=2.0)
            run.assert_detected("counter_drift", within=3.0)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "E   *Misdiagnosed: causal: diagnosis named crash(node-1); expected pause(node-1);"
            " not ranked (top 3: 1. crash(node-1)*",
            # node_down is usually confirmed by then; a very loaded machine may not have
            # finished its grace period, so the list of what was seen is not pinned down
            "E   *NotDetected: counter_drift not detected within 2.* s of monitoring"
            " (saw: *; last observation: redis=up node-1=up node-2=unreachable node-3=up)",
        ]
    )
    # the summary at the end shows both scenarios and the accuracy table
    result.stdout.fnmatch_lines(
        [
            "*operator: scenarios*",
            "failed  test_expects_the_wrong_cause * detected=node_down@node-1 * rank=causal:-",
            "failed  test_detection_deadline_missed * detected=node_down@node-2 * rank=-",
            "*operator: diagnosis accuracy*",
            "causal * 1 * 0% * 0% * 0% *",
        ]
    )


def test_two_faults_want_both_causes_within_the_top_two(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_two="""
        import pytest
        from pytest_operator import FaultKind, RootCause, compose, kill, partition, steady

        pytestmark = pytest.mark.subject("ratelimiter")

        @pytest.mark.chaos(compose(kill("node-1"), partition("client", "node-3")))
        async def test_both_named(operator, workload):
            await workload.start(steady(rate=60), keys="k1")
            run = await operator.monitor(until="request_errors", timeout=15, settle=1.0)
            run.assert_detected("node_down", component="node-1")
            await operator.assert_diagnosis(run)  # both injected causes, within the top 2

        @pytest.mark.chaos(compose(kill("node-1"), partition("client", "node-3")))
        async def test_one_expected_wrongly(operator, workload):
            await workload.start(steady(rate=60), keys="k1")
            run = await operator.monitor(until="request_errors", timeout=15, settle=1.0)
            wrong = RootCause(FaultKind.PAUSE, "node-2")
            await operator.assert_diagnosis(run, [RootCause(FaultKind.CRASH, "node-1"), wrong])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *Misdiagnosed: causal: diagnosis named *; expected pause(node-2) within the"
            " top 2; not ranked (top 3: *crash(node-1)*",
        ]
    )


def test_bad_scenario_inputs_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.subject("ratelimiter", policy="yolo")
        async def test_bad_option(operator):
            pass

        @pytest.mark.subject("ratelimiter")
        @pytest.mark.chaos("node-1 is down")
        async def test_bad_fault(operator):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [
            "*test_bad_option: ratelimiter: policy=yolo: invalid value;"
            " valid values: fail_open, fail_closed, local*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*test_bad_fault: @pytest.mark.chaos takes faults such as"
            " partition('node-2', 'redis'); got 'node-1 is down'*",
        ]
    )
    result.assert_outcomes(errors=2)


def test_trials_repeat_each_scenario_and_the_cluster_is_shared(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_trials="""
        import pytest
        from pytest_operator import steady

        pytestmark = pytest.mark.subject("ratelimiter")

        async def test_control(operator, workload, cluster, operator_clusters):
            await workload.start(steady(rate=30), keys="k1")
            run = await operator.monitor(timeout=1.0)
            run.assert_no_violation()
            assert operator_clusters.starts == 1, "one cluster serves every trial"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--trials=2", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_control?trial1? PASSED*", "*test_control?trial2? PASSED*"])


def test_backends_not_built_yet_say_so(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_backend="""
        import pytest

        pytestmark = pytest.mark.subject("ratelimiter")

        async def test_needs_a_cluster(cluster):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--cluster=external")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*--cluster=external is not implemented yet; use --cluster=embedded*"]
    )
